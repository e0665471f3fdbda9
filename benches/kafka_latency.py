"""End-to-end latency of a Weir run from Kafka into a Delta table.

For every row of the table: the time its Delta commit was written (the commit's timestamp, when
the row became visible to readers) minus `_kafka_timestamp` (when the producer created the
record). Prints p50 / p99 / max over all rows. Usage: kafka_latency.py TABLE_DIR
"""

import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def main(table: str) -> None:
    log = os.path.join(table, "_delta_log")
    latencies = []
    for name in sorted(os.listdir(log)):
        if not name.endswith(".json"):
            continue
        committed_ms = None
        files = []
        with open(os.path.join(log, name)) as f:
            for line in f:
                action = json.loads(line)
                if "commitInfo" in action:
                    committed_ms = action["commitInfo"]["timestamp"]
                elif "add" in action:
                    files.append(action["add"]["path"])
        for path in files:
            produced = pq.read_table(os.path.join(table, path), columns=["_kafka_timestamp"])
            for ms in produced.column(0).cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_pylist():
                latencies.append(committed_ms - ms)
    if not latencies:
        sys.exit(f"no rows in {table}")
    latencies.sort()

    def pct(p: float) -> int:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    print(
        f"latency: {len(latencies)} rows, produce -> visible in Delta: "
        f"p50 {pct(0.50)} ms, p99 {pct(0.99)} ms, max {latencies[-1]} ms"
    )


if __name__ == "__main__":
    main(sys.argv[1])
