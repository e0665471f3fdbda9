-- Cart abandonment as a 30-minute LEFT interval join: every add_to_cart against the same
-- user's checkouts and purchases in the 30 minutes after it; the adds that found none.
CREATE VIEW adds AS
SELECT event_id, user_id, product_id, event_time FROM events WHERE event_type = 'add_to_cart';
CREATE VIEW orders AS
SELECT user_id, event_time FROM events WHERE event_type IN ('checkout', 'purchase');
CREATE TABLE abandoned AS
SELECT a.event_id, a.user_id, a.product_id, a.event_time AS item_added_time
FROM adds a
LEFT JOIN orders o
  ON a.user_id = o.user_id
 AND o.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '30 minutes'
WHERE o.user_id IS NULL;
