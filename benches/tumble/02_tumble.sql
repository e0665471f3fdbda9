-- 1-minute tumbling revenue per product, straight from the source (benches/windows.sh).
CREATE TABLE gold.product_minute AS
SELECT window_start, window_end, product_id, count(*) AS events, sum(amount) AS amount
FROM TUMBLE(events, event_time, INTERVAL '1 minute')
GROUP BY window_start, window_end, product_id;
