#!/usr/bin/env bash
# Sets up .venv with the test dependencies, lints with ruff and runs the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
