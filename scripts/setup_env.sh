#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs the engine.
# Usage: scripts/setup_env.sh [runtime|test]
#   runtime: torch (pinned, CPU build on machines without a GPU) + the engine and its needs
#   test:    the above + pytest, ruff, jsonschema, slicer-core and trame-slicer
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-runtime}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
# torch first and pinned, so no other requirement can pull a different (CUDA) build.
pip install "torch==2.13.0"
if [ "$kind" = "test" ]; then
  pip install -e ".[test]"
else
  pip install -e .
fi
