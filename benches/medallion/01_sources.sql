-- The ecommerce medallion over a folder of generated JSON files (see benches/run.sh), with the
-- example's 10-minute watermark (silver's dedupe remembers ids within it).
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
) WITH (connector = 'files', path = '${BENCH_DATA}', format = 'json',
        max_files_per_trigger = ${FILES_PER_TRIGGER:-2});
