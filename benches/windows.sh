#!/usr/bin/env bash
# Benchmark: windowed aggregation over the generated JSON folder (see benches/run.sh): a 1-minute
# TUMBLE per product, and a 15m/5m HOP per merchant with count(DISTINCT). Prints events/s,
# peak RSS and the largest window state. Usage: benches/windows.sh [EVENTS]  (default 2,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
source benches/common.sh
data=$(bench_data "$events")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for job in tumble hop; do
  BENCH_DATA="$PWD/$data" "$weir" run "benches/$job" --once --drain --lake "$work/$job" \
    --progress json 2>"$work/$job.log" >"$work/$job.json"
  summary=$(grep '^weir: .* epochs' "$work/$job.log")
  state=$(grep -o '"open_windows":{[^}]*}' "$work/$job.json" | grep -o '[0-9]*}' | tr -d '}' | sort -n | tail -1)
  echo "$job: $summary, largest state ${state:-0} open groups"
done
