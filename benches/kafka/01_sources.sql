-- The medallion benchmark's source on Kafka (benches/kafka.sh fills the topic).
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
    event_time      TIMESTAMP NOT NULL
) WITH (connector = 'kafka', topic = '${TOPIC:-events}', format = 'json',
        'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}',
        max_records_per_trigger = ${RECORDS_PER_TRIGGER:-200000});
