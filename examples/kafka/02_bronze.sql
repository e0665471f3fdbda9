-- Bronze: every decodable event as it arrived, plus where it came from (topic, partition and
-- offset trace a row to its Kafka record) and when we took it.
CREATE TABLE bronze.events AS
SELECT *, _source, _topic, _partition, _offset, _epoch, now() AS ingested_at
FROM events;
