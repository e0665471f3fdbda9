-- The ecommerce events read from Kafka instead of the generator; the other files of this
-- folder are the ecommerce example's bronze, silver, fraud and gold tables, unchanged.
-- Fill the topic with `weir produce --topic events --from-generator ecommerce --events N`.
-- KAFKA_BOOTSTRAP, TOPIC and RECORDS_PER_TRIGGER can be set from the environment.
CREATE SOURCE events (
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    user_id         TEXT,
    session_id      TEXT,
    product_id      TEXT,
    category        TEXT,
    merchant        TEXT,
    amount          DOUBLE,
    currency        TEXT,
    payment_method  TEXT,
    country         TEXT,
    city            TEXT,
    device_id       TEXT,
    is_known_fraud  BOOLEAN,
    event_time      TIMESTAMP NOT NULL,
    WATERMARK FOR event_time AS event_time - INTERVAL '10 minutes'
) WITH (
    connector                 = 'kafka',
    topic                     = '${TOPIC:-events}',
    'bootstrap.servers'       = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}',
    format                    = 'json',
    starting_offsets          = 'earliest',
    max_records_per_trigger   = ${RECORDS_PER_TRIGGER:-200000}
);
