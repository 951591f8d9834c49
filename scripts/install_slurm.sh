#!/usr/bin/env bash
# Install Debian's single-node SLURM for the job-array test (root only; a no-op
# when sbatch is already there). Without root the SLURM test is skipped.
set -euo pipefail
if command -v sbatch >/dev/null 2>&1 && command -v slurmctld >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_slurm: not root; the SLURM job-array test will be skipped" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    slurm-wlm slurmctld slurmd slurm-client munge slurm-wlm-torque >/dev/null
