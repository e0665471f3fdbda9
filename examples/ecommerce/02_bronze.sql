-- Bronze: every decodable event as it arrived, plus where it came from and when we took it.
CREATE TABLE bronze.events AS
SELECT *, _source, _offset, _epoch, now() AS ingested_at
FROM events;
