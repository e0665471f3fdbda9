#!/usr/bin/env bash
# The test command of the README and of CI: makes the Python reader venv (for the interop test),
# starts a real Kafka broker (Tansu, for the Kafka end-to-end and crash tests) when it is
# installed (`scripts/tansu.sh install`; CI installs it), runs every test of the workspace, and
# stops the broker by its PID. Without Tansu those tests skip on a developer's machine; under
# CI=true they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-env.sh
broker_dir=
# Stop the broker by its PID and remove its data folder (its SQLite log is ~80 MB).
stop_broker() {
  [[ -z "$broker_dir" ]] && return
  bash scripts/tansu.sh stop "$broker_dir" || true
  rm -rf "$broker_dir"
}
trap stop_broker EXIT
# Under CI=true a missing Tansu is built (20-45 minutes, once); on a developer's machine the
# real-broker tests skip instead, and this says how to get them.
tansu_ready() { [[ -x "$(bash scripts/tansu.sh binary 2>/dev/null)" ]]; }
if [[ "${CI:-}" == "true" ]] || tansu_ready; then
  broker_dir=$(mktemp -d -t weir-tansu.XXXXXX)
  WEIR_TEST_KAFKA=$(bash scripts/tansu.sh start "$broker_dir")
  export WEIR_TEST_KAFKA
  echo "test.sh: Tansu broker at $WEIR_TEST_KAFKA (PID $(cat "$broker_dir/tansu.pid"), data $broker_dir)"
else
  echo "test.sh: Tansu is not installed, so the real-broker tests skip; \`bash scripts/tansu.sh install\` builds it once (20-45 minutes)"
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
