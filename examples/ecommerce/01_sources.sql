-- Raw e-commerce events from the built-in generator: no services needed.
-- EVENTS and SEED can be set from the environment, e.g. EVENTS=20000 weir run ...
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
    connector       = 'generator',
    kind            = 'ecommerce',
    events          = ${EVENTS:-1000000},
    seed            = ${SEED:-42},
    late_ratio      = 0.01,
    duplicate_ratio = 0.01,
    malformed_ratio = 0.001,
    max_events_per_trigger = ${EVENTS_PER_TRIGGER:-200000}
);
