-- The same rows into a Delta table of the lake: the job without PostgreSQL.
CREATE TABLE bronze.events AS
SELECT event_id, event_type, user_id, product_id, merchant, amount, country, event_time
FROM events;
