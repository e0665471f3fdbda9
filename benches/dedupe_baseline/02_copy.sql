-- The same rows copied without deduplication: the stateless baseline for benches/dedupe.sh.
CREATE TABLE all_events AS SELECT id, user_id, amount, ts FROM ev;
