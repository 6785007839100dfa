#!/usr/bin/env bash
# Sets up .venv and runs the end-to-end demo on the embedded synthetic cohort:
# make the cohort, train the baseline (cached), forget subject "070" with noisy-label + fix-decoder, report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh runtime
exec .venv/bin/machine-unlearning demo --output demo-output "$@"
