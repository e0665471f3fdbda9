#!/usr/bin/env bash
# The long form of the Kafka crash test: the ecommerce pipeline over 200,000 events on a real
# broker, crashed once at each step of an epoch and then kill -9'ed at KILLS random moments
# (default 50; CI runs 10), restarted each time, and compared table by table with one
# uninterrupted run. Starts its own Tansu broker (scripts/tansu.sh) and stops it at the end.
# Usage: scripts/kafka-crash-test.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-50}
broker_dir=$(mktemp -d -t weir-crash-tansu.XXXXXX)
trap 'bash scripts/tansu.sh stop "$broker_dir" >/dev/null 2>&1 || true' EXIT
WEIR_TEST_KAFKA=$(bash scripts/tansu.sh start "$broker_dir")
export WEIR_TEST_KAFKA
echo "kafka-crash-test: broker $WEIR_TEST_KAFKA, $kills random kills"
WEIR_CRASH_KILLS=$kills cargo test -p weir-cli --test kafka_broker \
  kafka_pipeline_killed_at_every_step_and_at_random_equals_uninterrupted_run -- --nocapture
