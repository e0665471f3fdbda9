#!/usr/bin/env bash
# The test command of the README and of CI: makes the Python reader venv (for the interop test),
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/python-env.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
