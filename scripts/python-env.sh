#!/usr/bin/env bash
# Creates .venv with the Delta readers the interop tests use (deltalake, duckdb, polars, pyarrow,
# dbt-duckdb; dbt-core is kept below 1.12, which cannot install offline), and Playwright, which
# drives Debian's chromium in the page test of `weir serve` (it downloads no browser of its own).
# Reuses an existing venv when it already has them. Usage: scripts/python-env.sh [VENV_DIR]
set -euo pipefail
venv=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.venv"}
python=${PYTHON:-python3}
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import deltalake, duckdb, polars, pyarrow, dbt.cli.main, dbt.adapters.duckdb, playwright.sync_api' 2>/dev/null; then
  echo "python-env: $venv is ready"
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  'deltalake>=1.1,<2' 'duckdb>=1.1,<2' 'polars>=1.20,<2' 'pyarrow>=18' \
  'dbt-core>=1.9,<1.12' 'dbt-duckdb>=1.9,<2' 'playwright>=1.45,<2'
"$venv/bin/python" -c 'import deltalake, duckdb, polars, pyarrow; print("python-env: deltalake", deltalake.__version__, "duckdb", duckdb.__version__, "polars", polars.__version__, "pyarrow", pyarrow.__version__)'
