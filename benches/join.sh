#!/usr/bin/env bash
# Benchmark: the 30-minute cart-abandonment interval join (LEFT, unmatched adds) over the
# generated e-commerce events, next to the join's inputs copied without a join (the stateless
# baseline) and DuckDB running the same LEFT JOIN as one batch job. Prints events/s, peak RSS,
# the join's state when the run ends, and whether weir's rows equal DuckDB's over the on-time rows.
# Usage: benches/join.sh [EVENTS]   (default 2,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
threads=${THREADS:-$(nproc)}
source benches/common.sh
data=$(bench_data "$events")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for job in join_baseline join; do
  BENCH_DATA="$PWD/$data" "$weir" run "benches/$job" --once --drain --lake "$work/$job" \
    --threads "$threads" --progress quiet 2>"$work/$job.log"
  echo "$job: $(grep '^weir: .* epochs' "$work/$job.log")"
done
echo "abandoned adds: $("$weir" query --lake "$work/join" "SELECT count(*) AS n FROM abandoned" | grep -Eo '[0-9]+' | head -1)"
# Rows behind the watermark are late: the join drops them (counted here), while DuckDB's batch
# join uses every row, so its count differs from weir's by what those late rows change.
BENCH_DATA="$PWD/$data" "$weir" status benches/join --lake "$work/join" | grep 'late rows' || true
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python benches/duckdb_join.py "$data" "$work/duckdb.parquet" "$threads" "$events"
  # The same join over the on-time rows only (the source's 10-minute watermark) must give
  # exactly weir's rows.
  .venv/bin/python benches/join_oracle.py "$data" "$work/join/abandoned" "${FILES_PER_TRIGGER:-2}" 10
else
  echo "duckdb:  skipped (run scripts/python-env.sh)"
fi
