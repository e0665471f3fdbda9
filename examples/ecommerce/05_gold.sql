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

-- User spend per hour, in Spark's syntax (GROUP BY window(...); window.start / window.end).
CREATE TABLE gold.user_spend_hourly AS
SELECT
    window.start                    AS window_start,
    window.end                      AS window_end,
    user_id,
    sum(amount)                     AS spend,
    count(*)                        AS purchases,
    count(DISTINCT merchant)        AS merchants,
    count(DISTINCT payment_method)  AS payment_methods
FROM silver.events
WHERE event_type = 'purchase'
GROUP BY window(event_time, '1 hour'), user_id;

-- Country metrics per 30 minutes.
CREATE TABLE gold.country_30m AS
SELECT
    window_start,
    window_end,
    country,
    count(*)                                              AS events,
    count(*) FILTER (WHERE event_type = 'purchase')       AS purchases,
    sum(amount) FILTER (WHERE event_type = 'purchase')    AS revenue,
    count(DISTINCT user_id)                               AS users
FROM TUMBLE(silver.events, event_time, INTERVAL '30 minutes')
GROUP BY window_start, window_end, country;

-- Hourly platform summary.
CREATE TABLE gold.hourly_summary AS
SELECT
    window_start,
    window_end,
    count(*)                                                  AS events,
    count(*) FILTER (WHERE event_type = 'purchase')           AS purchases,
    count(*) FILTER (WHERE event_type = 'refund')             AS refunds,
    sum(amount) FILTER (WHERE event_type = 'purchase')        AS revenue,
    approx_distinct(user_id)                                  AS active_users,
    approx_percentile_cont(amount, 0.5) FILTER (WHERE event_type = 'purchase')
                                                              AS median_order_value,
    stddev(amount) FILTER (WHERE event_type = 'purchase')     AS order_value_stddev
FROM TUMBLE(silver.events, event_time, INTERVAL '1 hour')
GROUP BY window_start, window_end;

-- Fraud velocity: users with more than 5 purchases within 30 minutes (sliding every 5).
CREATE TABLE fraud.velocity AS
SELECT
    window_start,
    window_end,
    user_id,
    count(*)                  AS purchases,
    sum(amount)               AS amount,
    min(event_time)           AS first_purchase,
    max(event_time)           AS last_purchase
FROM HOP(silver.events, event_time, INTERVAL '5 minutes', INTERVAL '30 minutes')
WHERE event_type = 'purchase'
GROUP BY window_start, window_end, user_id
HAVING count(*) > 5;

-- Inventory velocity: units sold per product per hour...
CREATE VIEW product_units_hourly AS
SELECT
    window_start,
    window_end,
    product_id,
    count(*)    AS units,
    sum(amount) AS revenue
FROM TUMBLE(silver.events, event_time, INTERVAL '1 hour')
WHERE event_type = 'purchase'
GROUP BY window_start, window_end, product_id;

-- ...and the top 10 per hour (ties broken by revenue, then product id, so exactly 10). An
-- hour's rows are all emitted in the same epoch (when the watermark passes its end), so the
-- ranking sees the whole hour.
CREATE TABLE gold.top_products_hourly AS
SELECT * FROM (
    SELECT
        window_start,
        window_end,
        product_id,
        units,
        revenue,
        ROW_NUMBER() OVER (PARTITION BY window_start
                           ORDER BY units DESC, revenue DESC, product_id) AS units_rank
    FROM product_units_hourly
) AS ranked
WHERE units_rank <= 10;

-- Sessions: a session per user ends 30 minutes after its last event (Spark's session_window),
-- with the conversion funnel it reached.
CREATE TABLE gold.sessions AS
SELECT
    user_id,
    session_window.start                                  AS session_start,
    session_window.end                                    AS session_end,
    date_part('epoch', max(event_time)) - date_part('epoch', min(event_time))
                                                          AS active_seconds,
    count(*)                                              AS events,
    bool_or(event_type = 'add_to_cart')                   AS reached_cart,
    bool_or(event_type = 'checkout')                      AS reached_checkout,
    bool_or(event_type = 'purchase')                      AS purchased,
    sum(amount) FILTER (WHERE event_type = 'purchase')    AS revenue
FROM silver.events
GROUP BY session_window(event_time, '30 minutes'), user_id;
