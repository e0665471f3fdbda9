-- Bronze for a files source: the metadata columns are _file and _line.
CREATE TABLE bronze.events AS
SELECT *, _source, _file, _line, _epoch, now() AS ingested_at
FROM events;
