-- 200,000 users in one 1-hour window, the same query without DISTINCT (benches/count_distinct.sh).
CREATE SOURCE ev (k TEXT NOT NULL, v BIGINT, s TEXT, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '1 minute')
WITH (connector = 'files', path = '${BENCH_DATA}', settle_time = '0s');
CREATE TABLE d AS SELECT window_start, k, count(v) AS dv, count(s) AS ds
FROM TUMBLE(ev, ts, INTERVAL '1 hour') GROUP BY window_start, window_end, k;
