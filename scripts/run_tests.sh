#!/usr/bin/env bash
# Run the test suite on a fresh machine: install what it needs, then pytest.
# Tests start their own embedded PostgreSQL (and, for the job-array test, a
# single-node SLURM on localhost, and for the report a headless Chromium);
# they never touch ./.slapp.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
bash scripts/install_slurm.sh
bash scripts/install_chromium.sh
# shellcheck disable=SC1091
. .venv/bin/activate
exec python -m pytest -q -p no:cacheprovider --durations=10 tests "$@"
