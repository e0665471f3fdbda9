-- Silver: typed, cleaned and deduplicated events, partitioned by day: events with a positive
-- amount, and refunds (negative amounts). The generator re-sends 1% of events unchanged (an
-- at-least-once producer); ROW_NUMBER() ... WHERE rn = 1 keeps the first copy of each
-- event_id and remembers the ids within the watermark.
CREATE TABLE silver.events WITH (partition_by = 'event_date') AS
SELECT
    event_id,
    event_type,
    user_id,
    session_id,
    product_id,
    category,
    merchant,
    amount,
    currency,
    payment_method,
    upper(trim(country))        AS country,
    city,
    device_id,
    coalesce(is_known_fraud, false) AS is_known_fraud,
    event_time,
    CAST(event_time AS DATE)    AS event_date,
    CASE
        WHEN amount < 50   THEN 'small'
        WHEN amount < 250  THEN 'medium'
        WHEN amount < 1000 THEN 'large'
        ELSE 'xl'
    END                         AS amount_bucket
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id) AS rn FROM bronze.events)
WHERE (amount > 0 OR event_type = 'refund') AND rn = 1;
