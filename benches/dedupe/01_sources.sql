-- 2,000,000 events, 1,000,000 ids each sent twice, all within one hour of event time: every id
-- stays inside the watermark horizon, so the dedupe holds all of them (see benches/dedupe.sh).
CREATE SOURCE ev (
    id       TEXT NOT NULL,
    user_id  TEXT,
    amount   DOUBLE,
    ts       TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '1 hour'
) WITH (connector = 'files', path = '${BENCH_DATA}', format = 'json',
        max_files_per_trigger = ${FILES_PER_TRIGGER:-2});
