-- Mode B: dedupe, then 10-minute tumbling windows per user.
-- To Parquet in append mode: each window once, when the watermark has passed its end.
CREATE TABLE processed.user_activity WITH (
    format = 'parquet', path = '${OUT:-processed}/user_activity'
) AS
SELECT window_start, window_end, userId, count(*) AS events, sum(value) AS total_value
FROM TUMBLE(deduped, timestamp, INTERVAL '10 minutes')
GROUP BY window_start, window_end, userId;

-- To Kafka in update mode: each epoch sends the windows that changed, keyed by
-- {"window_start", "window_end", "userId"}, so a compacted topic keeps each one's latest value.
CREATE TABLE user_activity_updates WITH (
    connector = 'kafka', topic = '${TOPIC_PREFIX:-}user-activity',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}', output_mode = 'update'
) AS
SELECT window_start, window_end, userId, count(*) AS events, sum(value) AS total_value
FROM TUMBLE(deduped, timestamp, INTERVAL '10 minutes')
GROUP BY window_start, window_end, userId;
