-- Generated e-commerce events (no JSON decoding: the benchmark measures the sink).
CREATE SOURCE events (
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    user_id         TEXT,
    product_id      TEXT,
    merchant        TEXT,
    amount          DOUBLE,
    country         TEXT,
    event_time      TIMESTAMP NOT NULL,
    WATERMARK FOR event_time AS event_time - INTERVAL '10 minutes'
) WITH (
    connector       = 'generator',
    kind            = 'ecommerce',
    events          = ${EVENTS:-1000000},
    max_events_per_trigger = 200000
);
