#!/usr/bin/env bash
# The whole toolkit end to end on this machine, no LIMS or cluster needed:
#   bash scripts/run_demo.sh [--workers 2] [--slapp_home DIR] ...
# Creates .venv on first use (several minutes), then runs `python -m slapp.demo.run_demo`:
# embedded PostgreSQL, a demo LIMS, steps 1-3 on synthetic movies, and a summary of how
# well the ROIs match the ground truth. A second run reuses everything and is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== Python environment (.venv) =="
bash scripts/setup_env.sh
exec .venv/bin/python -m slapp.demo.run_demo "$@"
