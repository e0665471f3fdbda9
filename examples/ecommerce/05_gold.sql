-- Gold: windowed business aggregates over silver (event time, 10-minute watermark on `events`).
-- Windows are written once the watermark passes their end; `weir run --once --drain` also
-- writes the windows still open at the end of the input.

-- Revenue per minute.
CREATE TABLE gold.revenue_per_minute AS
SELECT
    window_start,
    window_end,
    sum(amount)   AS total_revenue,
    count(*)      AS order_count,
    avg(amount)   AS avg_order_value
FROM TUMBLE(silver.events, event_time, INTERVAL '1 minute')
WHERE event_type = 'purchase'
GROUP BY window_start, window_end;

-- Merchant metrics over 15 minutes, sliding every 5.
CREATE TABLE gold.merchant_15m AS
SELECT
    window_start,
    window_end,
    merchant,
    count(*)                                            AS tx_count,
    sum(amount)                                         AS revenue,
    avg(amount)                                         AS avg_value,
    avg(CASE WHEN is_known_fraud THEN 1.0 ELSE 0.0 END) AS fraud_rate,
    count(DISTINCT user_id)                             AS customers,
    count(DISTINCT device_id)                           AS devices
FROM HOP(silver.events, event_time, INTERVAL '5 minutes', INTERVAL '15 minutes')
WHERE event_type IN ('purchase', 'checkout')
GROUP BY window_start, window_end, merchant;
