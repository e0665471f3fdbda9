-- An event processor moved off Spark: user events from Kafka, delivered at least once (3% come
-- twice), deduplicated on eventId and written as plain Parquet files, with per-user activity
-- windows to Parquet and to a Kafka topic. camelCase names as the Spark job read them.
-- Fill the topic with `weir produce --from-generator clicks --events N`.
-- KAFKA_BOOTSTRAP, TOPIC_PREFIX and OUT (the folder of the Parquet files; default
-- `processed` in the lake) come from the environment.
CREATE SOURCE events (
    eventId    TEXT NOT NULL,
    userId     TEXT NOT NULL,
    eventType  TEXT,
    value      DOUBLE,
    timestamp  TIMESTAMP NOT NULL,
    WATERMARK FOR timestamp AS timestamp - INTERVAL '5 minutes'
) WITH (
    connector           = 'kafka',
    topic               = '${TOPIC_PREFIX:-}events',
    'bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:9092}',
    starting_offsets    = 'earliest'
);

-- Spark's dropDuplicatesWithinWatermark("eventId"): the first copy of each id; its state is
-- freed once the watermark (5 minutes) passes the event.
CREATE VIEW deduped AS
SELECT DISTINCT ON (eventId) eventId, userId, eventType, value, timestamp FROM events;
