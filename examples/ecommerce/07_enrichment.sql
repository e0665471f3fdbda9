-- Enrichment with reference tables: users (segment, signup country) and products (category,
-- brand), written by `weir generate` next to the events (here: reference/, relative to this
-- file). A reference is read whole and kept in memory; when its file changes, the next epoch
-- joins the new version, and the version each epoch joined is logged with its offsets.
CREATE REFERENCE TABLE users (user_id TEXT NOT NULL, segment TEXT, signup_country TEXT)
WITH (connector = 'csv', path = 'reference/users.csv');

CREATE REFERENCE TABLE products (product_id TEXT NOT NULL, category TEXT, brand TEXT)
WITH (connector = 'csv', path = 'reference/products.csv');

-- Purchases with the buyer's segment and the product's brand (lookup joins: each epoch's
-- rows against the reference as it is).
CREATE VIEW purchases_enriched AS
SELECT e.event_time, e.amount,
       coalesce(u.segment, 'unknown') AS segment,
       coalesce(p.brand, 'unknown')   AS brand
FROM silver.events e
LEFT JOIN users u ON e.user_id = u.user_id
LEFT JOIN products p ON e.product_id = p.product_id
WHERE e.event_type = 'purchase';

-- Revenue per customer segment and brand per hour.
CREATE TABLE gold.segment_brand_hourly AS
SELECT window_start, window_end, segment, brand,
       count(*)    AS purchases,
       sum(amount) AS revenue,
       avg(amount) AS avg_order_value
FROM TUMBLE(purchases_enriched, event_time, INTERVAL '1 hour')
GROUP BY window_start, window_end, segment, brand;
