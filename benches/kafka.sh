#!/usr/bin/env bash
# Kafka end-to-end benchmark against a local Tansu broker (scripts/tansu.sh; started here and
# stopped at the end). Two measurements with benches/kafka (bronze + silver + fraud.scores):
#   1. throughput: EVENTS (default 2,000,000) generated events are produced to a 3-partition
#      topic first, then `weir run --once` is timed from its first fetch to its last Delta
#      commit (events/s, peak RSS);
#   2. latency: events are produced at RATE/s (default 20,000) for SECONDS (default 60) while
#      `weir run` polls every TRIGGER seconds (default 0.5); for each bronze row, the time of
#      the Delta commit that made it visible minus the time the producer created the record
#      (p50 / p99; needs the venv of scripts/python-env.sh for pyarrow).
# Usage: benches/kafka.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
rate=${RATE:-20000}
seconds=${SECONDS_OF_LOAD:-60}
trigger=${TRIGGER:-0.5}
source benches/common.sh
work=$(mktemp -d)
broker_dir="$work/broker"
trap 'bash scripts/tansu.sh stop "$broker_dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
servers=$(bash scripts/tansu.sh start "$broker_dir")
echo "broker:  Tansu $("$(bash scripts/tansu.sh install)" --version | cut -d' ' -f2) at $servers (storage ${WEIR_TANSU_STORAGE:-SQLite})"

# 1. Throughput over a topic filled beforehand.
bash scripts/tansu.sh topic "$broker_dir" events 3
"$weir" produce --topic events --bootstrap "$servers" --from-generator ecommerce --events "$events" 2>&1 | sed 's/^/produce: /'
KAFKA_BOOTSTRAP=$servers TOPIC=events "$weir" run benches/kafka --once --lake "$work/lake" \
  --progress quiet 2>"$work/weir.log"
summary=$(grep '^weir: .* epochs' "$work/weir.log")
secs=$(sed -E 's/.* in ([0-9.]+)s .*/\1/' <<<"$summary")
records=$(sed -E 's/.* ([0-9]+) records in .*/\1/' <<<"$summary")
echo "weir:    $summary"
echo "weir:    $(awk -v e="$records" -v s="$secs" 'BEGIN { printf "%.0f events/s from Kafka to Delta", e / s }')"
# Tansu's memory:// engine has been seen to keep fewer records than were acknowledged.
[[ "$records" == "$events" ]] || echo "note:    the broker holds $records of the $events produced records"

# 2. Latency at a fixed produce rate.
bash scripts/tansu.sh topic "$broker_dir" latency 3
KAFKA_BOOTSTRAP=$servers TOPIC=latency RECORDS_PER_TRIGGER=1000000 "$weir" run benches/kafka \
  --lake "$work/latency" --trigger-interval "$trigger" --progress quiet 2>"$work/latency.log" &
weir_pid=$!
"$weir" produce --topic latency --bootstrap "$servers" --from-generator ecommerce \
  --events $((rate * seconds)) --rate "$rate" 2>&1 | sed 's/^/produce: /'
sleep 5 # the last records' epoch
kill -INT "$weir_pid"
wait "$weir_pid" || true
echo "latency: $rate events/s for ${seconds}s, trigger interval ${trigger}s"
if [[ -x .venv/bin/python ]]; then
  .venv/bin/python benches/kafka_latency.py "$work/latency/bronze/events"
else
  echo "latency: skipped (run scripts/python-env.sh for pyarrow)"
fi
