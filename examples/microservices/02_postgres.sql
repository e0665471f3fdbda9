-- Revenue per minute, upserted while the minute is open, final a minute after it ends.
CREATE TABLE revenue_metrics WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.revenue_metrics',
    output_mode = 'update'
) AS
SELECT window_start, window_end,
       sum(amount) AS total_revenue,
       count(*)    AS order_count,
       avg(amount) AS avg_order_value
FROM TUMBLE(orders, ts, INTERVAL '1 minute')
GROUP BY window_start, window_end;

-- Fraud alerts: per user per 5-minute window sliding every minute, orders against payments
-- (a join of two windowed aggregates on the window and the user); a user with 3 or more
-- orders in 5 minutes, or an order over 2,000, is flagged.
CREATE VIEW orders_5m AS
SELECT window_start, window_end, user_id,
       count(*)    AS order_count,
       max(amount) AS max_order_amount
FROM HOP(orders, ts, INTERVAL '1 minute', INTERVAL '5 minutes')
GROUP BY window_start, window_end, user_id;

CREATE VIEW payments_5m AS
SELECT window_start, window_end, user_id, count(*) AS payment_count
FROM HOP(payments, ts, INTERVAL '1 minute', INTERVAL '5 minutes')
GROUP BY window_start, window_end, user_id;

CREATE TABLE fraud_alerts WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.fraud_alerts',
    primary_key = 'window_start,user_id'
) AS
SELECT o.window_start, o.window_end, o.user_id, o.order_count, o.max_order_amount,
       coalesce(p.payment_count, 0) AS payment_count,
       CASE WHEN o.order_count >= 3 THEN 'order_velocity' ELSE 'high_value' END AS alert_type
FROM orders_5m o
LEFT JOIN payments_5m p
  ON o.window_start = p.window_start AND o.window_end = p.window_end AND o.user_id = p.user_id
WHERE o.order_count >= 3 OR o.max_order_amount > 2000;

-- Cart abandonment: an item added with no checkout by the same user within 30 minutes (a LEFT
-- interval join: the add is emitted once the watermark is 30 minutes past it).
CREATE TABLE cart_abandonment WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.cart_abandonment'
) AS
SELECT a.user_id, a.product_id, a.ts AS item_added_time
FROM cart_adds a
LEFT JOIN checkouts c
  ON a.user_id = c.user_id AND c.ts BETWEEN a.ts AND a.ts + INTERVAL '30 minutes'
WHERE c.user_id IS NULL;

-- Inventory velocity: units added to carts per product per hour, and the products of the
-- hour's 10 highest unit counts (DENSE_RANK: products with equal counts share a rank, so an
-- hour may list more than 10). An hour's rows are emitted together, when it closes.
CREATE VIEW units_hourly AS
SELECT window_start, window_end, product_id, sum(quantity) AS units
FROM TUMBLE(cart_adds, ts, INTERVAL '1 hour')
GROUP BY window_start, window_end, product_id;

CREATE TABLE inventory_velocity WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.inventory_velocity',
    primary_key = 'window_start,product_id'
) AS
SELECT * FROM (
    SELECT window_start, window_end, product_id, units,
           DENSE_RANK() OVER (PARTITION BY window_start ORDER BY units DESC) AS velocity_rank
    FROM units_hourly
) AS ranked
WHERE velocity_rank <= 10;

-- Operational metrics: messages per topic per minute, as metric rows.
CREATE VIEW messages AS SELECT _topic AS topic, ts FROM all_topics;

CREATE TABLE operational_metrics WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.operational_metrics',
    primary_key = 'metric_name,topic,window_start'
) AS
SELECT 'messages' AS metric_name, count(*) AS value, topic, window_start
FROM TUMBLE(messages, ts, INTERVAL '1 minute')
GROUP BY window_start, window_end, topic;
