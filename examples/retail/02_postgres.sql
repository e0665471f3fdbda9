-- A transaction sent twice is counted once: the first copy within the watermark is kept here,
-- and the PostgreSQL table's primary key (on_conflict = 'nothing') keeps the first row of an
-- id that comes back later than that.
CREATE VIEW transactions_once AS
SELECT DISTINCT ON (transaction_id) * FROM transactions;

CREATE TABLE transactions_pg WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.transactions',
    primary_key = 'transaction_id', on_conflict = 'nothing'
) AS
SELECT transaction_id, store_id, product_id, quantity, unit_price, amount, payment_method, ts
FROM transactions_once;

CREATE TABLE refunds_pg WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.refunds',
    primary_key = 'refund_id', on_conflict = 'nothing'
) AS
SELECT refund_id, transaction_id, product_id, amount, reason, ts FROM refunds;

-- Revenue per product per minute, upserted on (window_start, product_id) as each minute fills
-- up: the dashboard sees a minute's figures while it is open, final once the watermark
-- (2 minutes) has passed it.
CREATE TABLE product_metrics_minute WITH (
    connector = 'postgres', url = '${PG_URL}', table = 'public.product_metrics_minute',
    output_mode = 'update', primary_key = 'window_start,product_id'
) AS
SELECT window_start, window_end, product_id,
       sum(amount) AS total_revenue,
       count(*)    AS transaction_count
FROM TUMBLE(transactions_once, ts, INTERVAL '1 minute')
GROUP BY window_start, window_end, product_id;
