#!/usr/bin/env bash
# Benchmark: count(DISTINCT) state. 400,000 events of 200,000 users in one 1-hour window, each
# user's distinct numbers and strings counted, beside the same query without DISTINCT and
# DuckDB's batch answer over the same file. Prints seconds and peak RSS of each, and checks
# that weir and DuckDB agree. Usage: benches/count_distinct.sh [EVENTS] (default 400,000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-400000}
source benches/common.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/data"
python3 - "$events" "$work/data/a.json" <<'PY'
import json, random, sys
n, path = int(sys.argv[1]), sys.argv[2]
random.seed(1)
with open(path, "w") as f:
    for i in range(n):
        f.write(json.dumps({"k": f"user-{i % (n // 2)}", "v": random.randint(0, 10**6),
                            "s": f"item-{random.randint(0, 1000)}",
                            "ts": "2024-03-01T00:00:%02dZ" % (i % 60)}) + "\n")
PY
for job in count_distinct count_distinct_plain; do
  BENCH_DATA="$work/data" /usr/bin/time -f "%e %M" -o "$work/$job.time" \
    "$weir" run "benches/$job" --once --drain --lake "$work/$job" --progress quiet 2>/dev/null
  read -r secs kb <"$work/$job.time"
  echo "$job: ${secs} s, peak RSS $((kb / 1024)) MiB"
done
"$weir" query --lake "$work/count_distinct" "SELECT sum(dv) AS dv, sum(ds) AS ds FROM d"
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python - "$work/data/a.json" <<'PY'
import duckdb, resource, sys, time
start = time.time()
row = duckdb.sql(f"""SELECT sum(dv), sum(ds) FROM (SELECT k, count(DISTINCT v) AS dv,
    count(DISTINCT s) AS ds FROM read_json('{sys.argv[1]}') GROUP BY k)""").fetchone()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"duckdb: {time.time() - start:.2f} s, peak RSS {rss} MiB, dv={row[0]} ds={row[1]}")
PY
else
  echo "duckdb: skipped (run scripts/python-env.sh)"
fi
