"""DuckDB doing the benchmark's work as one batch job: JSON -> bronze Parquet -> silver Parquet
(partitioned by event_date) -> fraud scores Parquet, with the example's own silver and fraud SQL.

Usage: duckdb_medallion.py DATA_DIR OUT_DIR THREADS. Prints events/s.
"""
import pathlib
import re
import sys
import time

import duckdb

data, out, threads = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
root = pathlib.Path(__file__).resolve().parent.parent / "examples" / "ecommerce"


def query_of(file, name):
    """The AS SELECT text of `CREATE ... name ... AS SELECT` in an example file."""
    text = (root / file).read_text()
    for stmt in text.split(";"):
        body = "\n".join(l for l in stmt.splitlines() if not l.strip().startswith("--"))
        if re.search(rf"CREATE\s+(TABLE|VIEW)\s+{re.escape(name)}\b", body):
            return re.search(r"\bAS\s+(SELECT\b.*)", body, re.S).group(1)
    raise SystemExit(f"{name} not found in {file}")


columns = {
    "event_id": "VARCHAR", "event_type": "VARCHAR", "user_id": "VARCHAR", "session_id": "VARCHAR",
    "product_id": "VARCHAR", "category": "VARCHAR", "merchant": "VARCHAR", "amount": "DOUBLE",
    "currency": "VARCHAR", "payment_method": "VARCHAR", "country": "VARCHAR", "city": "VARCHAR",
    "device_id": "VARCHAR", "is_known_fraud": "BOOLEAN", "event_time": "TIMESTAMPTZ",
}
out.mkdir(parents=True, exist_ok=True)
con = duckdb.connect()
con.execute(f"SET threads = {threads}")
con.execute("SET TimeZone = 'UTC'")
for schema in ("bronze", "silver", "fraud"):
    con.execute(f"CREATE SCHEMA {schema}")
start = time.time()
con.execute(
    f"""COPY (SELECT *, now() AS ingested_at FROM read_json('{data}/*.json',
        format = 'newline_delimited', ignore_errors = true, columns = {columns}))
        TO '{out}/bronze.parquet' (FORMAT parquet)"""
)
con.execute(f"CREATE VIEW bronze.events AS SELECT * FROM read_parquet('{out}/bronze.parquet')")
con.execute(
    f"COPY ({query_of('03_silver.sql', 'silver.events')}) TO '{out}/silver' (FORMAT parquet, PARTITION_BY (event_date))"
)
con.execute(
    f"CREATE VIEW silver.events AS SELECT * FROM read_parquet('{out}/silver/**/*.parquet', hive_partitioning = true)"
)
con.execute(f"CREATE VIEW purchase_signals AS {query_of('04_fraud.sql', 'purchase_signals')}")
con.execute(f"COPY ({query_of('04_fraud.sql', 'fraud.scores')}) TO '{out}/fraud.parquet' (FORMAT parquet)")
elapsed = time.time() - start
events = con.execute(f"SELECT count(*) FROM read_parquet('{out}/bronze.parquet')").fetchone()[0]
print(f"duckdb: {events} events in {elapsed:.1f}s ({events / elapsed:.0f} events/s)")
