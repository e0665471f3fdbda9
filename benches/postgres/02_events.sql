-- Every event appended to PostgreSQL (binary COPY into a staging table, one INSERT a epoch).
CREATE TABLE events_pg WITH (connector = 'postgres', url = '${PG_URL}', table = 'public.events') AS
SELECT event_id, event_type, user_id, product_id, merchant, amount, country, event_time
FROM events;
