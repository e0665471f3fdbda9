-- The join's inputs written as they are (the stateless baseline of benches/join.sh).
CREATE TABLE adds AS
SELECT event_id, user_id, product_id, event_time FROM events WHERE event_type = 'add_to_cart';
CREATE TABLE orders AS
SELECT user_id, event_time FROM events WHERE event_type IN ('checkout', 'purchase');
