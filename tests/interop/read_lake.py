"""Reads every Delta table of a Weir lake with deltalake/pyarrow, Polars and DuckDB.

Usage: read_lake.py LAKE TABLES_JSON PARTITION_DATE
TABLES_JSON maps dotted table names to paths relative to LAKE. Prints one JSON object:
per table the row count each reader saw, plus partition-pruned counts of silver.events for
event_date = PARTITION_DATE and how many data files each side of the pruning touched.
"""
import datetime
import json
import sys

import duckdb
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

lake, tables, date_text = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
date = datetime.date.fromisoformat(date_text)
out = {"tables": {}}
con = duckdb.connect()
for name, rel in tables.items():
    path = f"{lake}/{rel}"
    dt = DeltaTable(path)
    arrow_table = dt.to_pyarrow_table()
    files = dt.file_uris()
    dataset = dt.to_pyarrow_dataset()
    out["tables"][name] = {
        "version": dt.version(),
        "deltalake": arrow_table.num_rows,
        "polars": pl.read_delta(path).height,
        "duckdb_parquet": con.execute(
            "SELECT count(*) FROM read_parquet(?, hive_partitioning = true)", [files]
        ).fetchone()[0],
        "duckdb_arrow": con.execute("SELECT count(*) FROM dataset").fetchone()[0],
        "timestamp_types": sorted(
            {str(f.type) for f in arrow_table.schema if pa.types.is_timestamp(f.type)}
        ),
    }

silver_path = f"{lake}/{tables['silver.events']}"
silver = DeltaTable(silver_path)
pruned_files = silver.file_uris(partition_filters=[("event_date", "=", date_text)])
silver_files = silver.file_uris()
out["silver_partition"] = {
    "files_total": len(silver_files),
    "files_pruned": len(pruned_files),
    "deltalake": silver.to_pyarrow_table(
        partitions=[("event_date", "=", date_text)]
    ).num_rows,
    "polars": pl.scan_delta(silver_path)
    .filter(pl.col("event_date") == date)
    .select(pl.len())
    .collect()
    .item(),
    "duckdb": con.execute(
        "SELECT count(*) FROM read_parquet(?, hive_partitioning = true) WHERE event_date = ?",
        [silver_files, date],
    ).fetchone()[0],
}
print(json.dumps(out))
