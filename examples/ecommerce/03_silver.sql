-- Silver: typed and cleaned events, partitioned by day.
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
FROM bronze.events
WHERE amount > 0;
