#!/usr/bin/env bash
# Benchmark: weir over a generated JSON folder through bronze + silver + fraud.scores, then
# DuckDB doing the same work as one batch job over the same files. Prints events/s, MB/s of
# JSON and weir's peak RSS. Usage: benches/run.sh [EVENTS]   (default 2,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
threads=${THREADS:-$(nproc)}
source benches/common.sh
data=$(bench_data "$events")
mb=$(du -sm "$data" | cut -f1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "input:   $events events, ${mb} MB of JSON in $(ls "$data" | wc -l) files"
BENCH_DATA="$PWD/$data" "$weir" run benches/medallion --once --lake "$work/lake" --threads "$threads" --progress quiet 2>"$work/weir.log"
summary=$(grep '^weir: .* epochs' "$work/weir.log")
secs=$(sed -E 's/.* in ([0-9.]+)s .*/\1/' <<<"$summary")
echo "weir:    $summary"
echo "weir:    $(awk -v e="$events" -v s="$secs" -v m="$mb" 'BEGIN { printf "%.0f events/s, %.1f MB/s of JSON", e / s, m / s }')"
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python benches/duckdb_medallion.py "$data" "$work/duckdb" "$threads"
else
  echo "duckdb:  skipped (run scripts/python-env.sh)"
fi
