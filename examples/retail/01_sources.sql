-- A retail job moved off Spark: point-of-sale transactions and refunds from two Kafka topics
-- into PostgreSQL tables behind a dashboard.
-- Fill the topics with `weir produce --from-generator retail --events N` (transactions keyed
-- by id, 1% sent twice, 0.2% cut short; refunds 1-30 minutes after about 4% of them).
-- KAFKA_BOOTSTRAP, TOPIC_PREFIX and PG_URL come from the environment.
CREATE SOURCE transactions (
    transaction_id  TEXT NOT NULL,
    store_id        TEXT,
    product_id      TEXT NOT NULL,
    quantity        INT,
    unit_price      DOUBLE,
    amount          DOUBLE NOT NULL,
    payment_method  TEXT,
    ts              TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '2 minutes'
) WITH (
    connector           = 'kafka',
    topic               = '${TOPIC_PREFIX:-}transactions',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}',
    starting_offsets    = 'earliest'
);

CREATE SOURCE refunds (
    refund_id       TEXT NOT NULL,
    transaction_id  TEXT NOT NULL,
    product_id      TEXT,
    amount          DOUBLE NOT NULL,
    reason          TEXT,
    ts              TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '2 minutes'
) WITH (
    connector           = 'kafka',
    topic               = '${TOPIC_PREFIX:-}refunds',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}',
    starting_offsets    = 'earliest'
);
