-- Bronze for a Kafka source: where each record came from, and when it was produced.
CREATE TABLE bronze.events AS
SELECT *, _source, _topic, _partition, _offset, _kafka_timestamp, _epoch, now() AS ingested_at
FROM events;
