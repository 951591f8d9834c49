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
    # Suite2P pulls PyTorch from PyPI with its CUDA libraries (several GB): PyPI's
    # torchvision is built against that PyTorch and will not load next to a CPU-only
    # build. It runs on the CPU where there is no GPU. pip caches the download.
    python -m pip install --quiet -r requirements.txt
    python -m pip install --quiet --no-deps -e .
    touch "$stamp"
fi
