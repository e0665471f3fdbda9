"""DuckDB doing the join benchmark's work as one batch job: JSON -> adds LEFT JOIN orders
within 30 minutes -> the unmatched adds -> Parquet. Usage: duckdb_join.py DATA_DIR OUT_FILE
THREADS EVENTS. Prints events/s and the rows written (to compare with weir's)."""
import sys
import time

import duckdb


def abandoned_adds(events):
    """benches/join's query over the table `events` (event_id, event_type, user_id,
    product_id, event_time): the adds to cart with no checkout or purchase by the same user
    within 30 minutes. Shared with join_oracle.py."""
    return (
        f"SELECT a.event_id, a.user_id, a.product_id, a.event_time AS item_added_time "
        f"FROM (SELECT * FROM {events} WHERE event_type = 'add_to_cart') a "
        f"LEFT JOIN (SELECT * FROM {events} WHERE event_type IN ('checkout', 'purchase')) o "
        f"ON a.user_id = o.user_id AND o.event_time BETWEEN a.event_time "
        f"AND a.event_time + INTERVAL 30 MINUTE WHERE o.user_id IS NULL"
    )


def main():
    data, out, threads, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    start = time.time()
    con.execute(
        f"CREATE TEMP TABLE ev AS SELECT event_id, event_type, user_id, product_id, "
        f"CAST(event_time AS TIMESTAMP) AS event_time "
        f"FROM read_json('{data}/*.json', format = 'newline_delimited', ignore_errors = true, "
        "columns = {event_id: 'VARCHAR', event_type: 'VARCHAR', user_id: 'VARCHAR', "
        "product_id: 'VARCHAR', event_time: 'VARCHAR'}) WHERE event_time IS NOT NULL"
    )
    con.execute(f"COPY ({abandoned_adds('ev')}) TO '{out}' (FORMAT parquet)")
    secs = time.time() - start
    rows = con.execute(f"SELECT count(*) FROM '{out}'").fetchone()[0]
    print(f"duckdb:  {events} events in {secs:.2f}s, {events / secs:.0f} events/s, {rows} abandoned adds")


if __name__ == "__main__":
    main()
