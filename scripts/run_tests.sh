#!/usr/bin/env bash
# Run the test suite on a fresh machine: install what it needs, build the docs
# (failing on any warning), then pytest.
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
# the docs site (docs/) builds without one warning or broken reference; autodoc
# imports every module of slapp
docs_html=$(mktemp -d)
python -m sphinx -W --keep-going -q -b html docs "$docs_html"
rm -rf "$docs_html"
exec python -m pytest -q -p no:cacheprovider --durations=10 tests "$@"
