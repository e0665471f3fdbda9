#!/usr/bin/env bash
# Benchmark: deduplication over 2,000,000 events with 1,000,000 ids, all inside the watermark
# horizon, next to the same rows copied without dedupe (the stateless baseline) and DuckDB's
# DISTINCT ON as a batch job. Prints events/s, peak RSS and the dedupe's state per key.
# Usage: benches/dedupe.sh [EVENTS]   (default 2,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
threads=${THREADS:-$(nproc)}
source benches/common.sh
data="benches/data/dedupe-$events"
if [[ ! -d $data ]]; then
  python3 benches/dedupe_data.py "$data" "$events"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for job in dedupe_baseline dedupe; do
  BENCH_DATA="$PWD/$data" "$weir" run "benches/$job" --once --lake "$work/$job" \
    --threads "$threads" --progress quiet 2>"$work/$job.log"
  echo "$job: $(grep '^weir: .* epochs' "$work/$job.log")"
done
# The keys held after the run (no drain: every id is still inside the horizon).
BENCH_DATA="$PWD/$data" "$weir" status benches/dedupe --lake "$work/dedupe" | grep 'unique_events:' || true
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python benches/duckdb_dedupe.py "$data" "$work/duckdb.parquet" "$threads" "$events"
else
  echo "duckdb:  skipped (run scripts/python-env.sh)"
fi
