"""Builds the dbt project in tests/interop/dbt over a Weir lake and prints its models as JSON.

Usage: run_dbt.py LAKE WORK_DIR. dbt-duckdb's delta plugin reads the Delta tables.
"""
import json
import os
import pathlib
import sys

import duckdb
from dbt.cli.main import dbtRunner

lake, work = sys.argv[1], pathlib.Path(sys.argv[2])
project = pathlib.Path(__file__).resolve().parent / "dbt"
db = work / "dbt.duckdb"
os.environ["WEIR_LAKE"] = lake
os.environ["DBT_DUCKDB_PATH"] = str(db)
args = ["run", "--project-dir", str(project), "--profiles-dir", str(project),
        "--target-path", str(work / "target"), "--log-path", str(work / "logs"), "--quiet"]
result = dbtRunner().invoke(args)
if not result.success:
    raise SystemExit(f"dbt run failed: {result.exception or result.result}")
con = duckdb.connect(str(db))  # same configuration as the connection dbt keeps open
out = {
    "risk_summary": dict(con.execute("select risk_level, purchases from risk_summary").fetchall()),
    "daily_events": {str(d): n for d, n in con.execute("select event_date, events from daily_events").fetchall()},
}
print(json.dumps(out))
