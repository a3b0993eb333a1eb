#!/usr/bin/env bash
# The GPU check (issue 11), for a lent GPU machine or any CUDA host: the nightly's
# meta-training on ML-100K on the CPU and on CUDA (AMP), metrics side by side
# (benchmarks/gpu_check.py). Uses .venv when there is one (scripts/setup.sh installs the
# CUDA torch where nvidia-smi sees a GPU), else the python3 on PATH (a machine image with
# torch already in it, and metarec's other packages carried as wheels on PYTHONPATH).
#
#   benchmarks/gpu_check.sh [--data PATH/TO/ml-100k] [--steps 300]
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false GX_ANALYTICS_ENABLED=false
PYTHONUNBUFFERED=1 "$py" -m benchmarks.gpu_check "$@"
