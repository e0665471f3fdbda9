-- Mode A: the deduplicated events as Parquet files, one folder per event type (Hive style),
-- each file written whole under a hidden name and renamed.
CREATE TABLE processed.events WITH (
    format = 'parquet', path = '${OUT:-processed}/events', partition_by = 'eventType',
    compression = 'zstd', target_file_size = '64MB'
) AS
SELECT eventId, userId, eventType, value, timestamp FROM deduped;
