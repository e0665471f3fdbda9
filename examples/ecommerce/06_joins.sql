-- Stream joins over silver (both sides keep their rows only as long as the watermark allows a
-- match; see the README on joins).

-- Cart abandonment: items added to a cart with no checkout or purchase by the same user
-- within 30 minutes. A LEFT interval join emits each add that found no order, with NULLs,
-- once the watermark is 30 minutes past it; the WHERE keeps exactly those.
CREATE VIEW cart_adds AS
SELECT user_id, product_id, event_time FROM silver.events WHERE event_type = 'add_to_cart';

CREATE VIEW orders AS
SELECT user_id, event_time FROM silver.events WHERE event_type IN ('checkout', 'purchase');

CREATE TABLE gold.cart_abandonment AS
SELECT a.user_id, a.product_id, a.event_time AS item_added_time
FROM cart_adds a
LEFT JOIN orders o
  ON a.user_id = o.user_id
 AND o.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '30 minutes'
WHERE o.user_id IS NULL;

-- A streaming z-score: each purchase against the mean and standard deviation of the same
-- user's purchases in the previous hour (an hourly window joined to the purchases of the
-- hour after it); flagged when more than 3 standard deviations away.
CREATE VIEW user_purchases_hourly AS
SELECT window_start, window_end, user_id,
       count(*)       AS purchases,
       avg(amount)    AS mean_amount,
       stddev(amount) AS sd_amount
FROM TUMBLE(silver.events, event_time, INTERVAL '1 hour')
WHERE event_type = 'purchase'
GROUP BY window_start, window_end, user_id;

CREATE VIEW purchases AS
SELECT event_id, user_id, amount, event_time FROM silver.events WHERE event_type = 'purchase';

CREATE TABLE gold.purchase_zscores AS
SELECT p.event_id, p.user_id, p.amount, p.event_time,
       h.window_start                          AS baseline_hour,
       h.purchases                             AS baseline_purchases,
       h.mean_amount,
       h.sd_amount,
       (p.amount - h.mean_amount) / h.sd_amount AS z_score,
       abs(p.amount - h.mean_amount) > 3 * h.sd_amount AS flagged
FROM purchases p
JOIN user_purchases_hourly h
  ON p.user_id = h.user_id
 AND p.event_time >= h.window_end
 AND p.event_time < h.window_end + INTERVAL '1 hour'
WHERE h.purchases >= 3 AND h.sd_amount > 0;

-- Spark's deduplicate-then-aggregate job: silver is deduplicated on event_id; a 10-minute
-- tumbling window per user counts and sums it, in append mode.
CREATE TABLE gold.user_activity_10m AS
SELECT window_start, window_end, user_id, count(*) AS events, sum(amount) AS amount
FROM TUMBLE(silver.events, event_time, INTERVAL '10 minutes')
GROUP BY window_start, window_end, user_id;
