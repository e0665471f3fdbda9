"""The join benchmark's oracle: DuckDB runs the same LEFT JOIN as one batch query over the rows
that were on time, and compares its event ids with weir's `abandoned` table.

A row is on time when its event time is not behind its epoch's watermark: the largest event
time of the epochs before it minus the source's delay. Each epoch reads FILES_PER_TRIGGER files
in name order, as weir's files source does. Usage: join_oracle.py DATA_DIR TABLE_DIR
FILES_PER_TRIGGER DELAY_MINUTES. Prints the oracle's rows and whether they equal weir's."""
import glob
import json
import os
import sys

import duckdb

from duckdb_join import abandoned_adds

data, table, per_trigger, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def live_files(table_dir):
    """The table's data files: added and not removed in its Delta log's JSON commits."""
    live = set()
    for commit in sorted(glob.glob(os.path.join(table_dir, "_delta_log", "*.json"))):
        with open(commit) as f:
            for line in f:
                action = json.loads(line)
                if "add" in action:
                    live.add(action["add"]["path"])
                if "remove" in action:
                    live.discard(action["remove"]["path"])
    return [os.path.join(table_dir, p) for p in sorted(live)]


con = duckdb.connect()
files = sorted(glob.glob(os.path.join(data, "*.json")))
con.execute("CREATE TABLE epochs (file VARCHAR, epoch INT)")
con.executemany("INSERT INTO epochs VALUES (?, ?)",
                [(f, i // per_trigger + 1) for i, f in enumerate(files)])
con.execute(
    "CREATE TABLE ev AS SELECT event_id, event_type, user_id, product_id, "
    "CAST(event_time AS TIMESTAMP) AS event_time, epochs.epoch "
    "FROM read_json(?, format = 'newline_delimited', ignore_errors = true, filename = true, "
    "columns = {event_id: 'VARCHAR', event_type: 'VARCHAR', user_id: 'VARCHAR', "
    "product_id: 'VARCHAR', event_time: 'VARCHAR'}) j JOIN epochs ON j.filename = epochs.file "
    "WHERE event_time IS NOT NULL",
    [files],
)
con.execute(
    f"CREATE TABLE on_time AS SELECT ev.* FROM ev JOIN ("
    f"  SELECT e.epoch, (SELECT max(event_time) FROM ev WHERE ev.epoch < e.epoch) "
    f"    - INTERVAL {delay} MINUTE AS watermark FROM (SELECT DISTINCT epoch FROM ev) e"
    f") w USING (epoch) WHERE w.watermark IS NULL OR ev.event_time >= w.watermark"
)
con.execute(f"CREATE TABLE oracle AS SELECT event_id FROM ({abandoned_adds('on_time')})")
con.execute("CREATE TABLE weir AS SELECT event_id FROM read_parquet(?)", [live_files(table)])
rows = con.execute("SELECT count(*) FROM oracle").fetchone()[0]
extra = con.execute("SELECT count(*) FROM (FROM weir EXCEPT ALL FROM oracle)").fetchone()[0]
missing = con.execute("SELECT count(*) FROM (FROM oracle EXCEPT ALL FROM weir)").fetchone()[0]
verdict = "equal" if extra == 0 and missing == 0 else f"DIFFERENT: {extra} extra, {missing} missing"
print(f"oracle:  {rows} abandoned adds from the on-time rows; weir's table is {verdict}")
sys.exit(0 if verdict == "equal" else 1)
