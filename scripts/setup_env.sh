#!/usr/bin/env bash
# Create .venv with slapp and everything it needs; quick when it is already there.
# Used by scripts/run_demo.sh and scripts/run_tests.sh; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.slapp-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ] || [ requirements.txt -nt "$stamp" ]; then
    python -m pip install --quiet --upgrade pip wheel setuptools
    # Prefer the CPU build of PyTorch that this kind of machine keeps at hand (no GPU
    # here), resolved together with everything else so that nothing upgrades it;
    # elsewhere Suite2P pulls the default build (several GB with its CUDA libraries).
    python -m pip install --quiet -r requirements.txt "torch==2.13.0" 2>/dev/null \
        || python -m pip install --quiet -r requirements.txt
    python -m pip install --quiet --no-deps -e .
    touch "$stamp"
fi
