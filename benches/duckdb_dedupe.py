"""DuckDB doing the dedupe benchmark's work as one batch job: JSON -> DISTINCT ON (id) ->
Parquet. Usage: duckdb_dedupe.py DATA_DIR OUT_FILE THREADS EVENTS. Prints events/s."""
import sys
import time

import duckdb

data, out, threads, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
start = time.time()
con.execute(
    f"COPY (SELECT DISTINCT ON (id) id, user_id, amount, make_timestamp(ts * 1000) AS ts "
    f"FROM read_json('{data}/*.json', format = 'newline_delimited', "
    "columns = {id: 'VARCHAR', user_id: 'VARCHAR', amount: 'DOUBLE', ts: 'BIGINT'}) "
    f"ORDER BY id, ts) TO '{out}' (FORMAT parquet)"
)
secs = time.time() - start
print(f"duckdb:  {events} events in {secs:.2f}s, {events / secs:.0f} events/s")
