#!/usr/bin/env bash
# Benchmark: EVENTS generated events appended to a local PostgreSQL table by the PostgreSQL
# sink (binary COPY, one transaction an epoch), beside the same rows written to a Delta table,
# and PostgreSQL's own COPY of the same rows from a CSV file (psql \copy) as the server's limit.
# Prints rows/s and peak RSS. Needs Debian's postgresql (scripts/postgres.sh install).
# Usage: benches/postgres.sh [EVENTS]   (default 1,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
source benches/common.sh
work=$(mktemp -d)
trap 'bash scripts/postgres.sh stop "$work/pg" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
url=$(bash scripts/postgres.sh start "$work/pg")
export EVENTS=$events PG_URL=$url
"$weir" run benches/postgres_baseline --once --lake "$work/lake-delta" --progress quiet 2>"$work/delta.log"
echo "delta:      $(grep '^weir: .* epochs' "$work/delta.log")"
"$weir" run benches/postgres --once --lake "$work/lake-pg" --progress quiet 2>"$work/pg.log"
echo "postgres:   $(grep '^weir: .* epochs' "$work/pg.log")"
rows=$(psql "$url" -Atc 'SELECT count(*) FROM public.events')
echo "postgres:   $rows rows in public.events"
psql "$url" -qc "CREATE TABLE copy_check (LIKE public.events)"
psql "$url" -qc "\\copy (SELECT * FROM public.events) TO '$work/events.csv' CSV"
start=$(date +%s.%N)
psql "$url" -qc "\\copy copy_check FROM '$work/events.csv' CSV"
secs=$(echo "$(date +%s.%N) - $start" | bc)
echo "psql copy:  $rows rows in ${secs}s ($(echo "$rows / $secs" | bc) rows/s, text COPY from a file)"
