#!/usr/bin/env bash
# Create .venv and install metarec into it. Idempotent: a second run with an
# unchanged pyproject.toml does nothing.
#
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus pytest, ruff, psutil, moto[server] + s3fs (tests, benchmarks)
#
# torch: with an NVIDIA GPU visible (nvidia-smi), pip picks the CUDA build;
# without one we pin the CPU build of torch 2.13.0 *before* installing the
# project, so pip never pulls a multi-GB CUDA wheel on a CPU-only machine.
# Set METAREC_TORCH_INDEX_URL to a CPU wheel index if your pip has no local
# CPU wheel of torch (e.g. the PyTorch CPU index).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"
py="${PYTHON:-python3}"
venv=".venv"

if [[ ! -x "$venv/bin/python" ]]; then
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "metarec needs Python >= 3.11 (found $("$py" --version))" >&2; exit 1; }
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

stamp="$venv/.metarec-installed$extras"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

if ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "metarec setup: GPU found, installing CUDA torch" >&2
    "${pip[@]}" install "torch>=2.13,<3"
  else
    echo "metarec setup: no GPU, installing CPU torch 2.13.0" >&2
    index=()
    [[ -n "${METAREC_TORCH_INDEX_URL:-}" ]] && index=(--index-url "$METAREC_TORCH_INDEX_URL")
    "${pip[@]}" install "${index[@]}" "torch==2.13.0" 2>&1 | grep -v "is ignored" >&2 || true
    "$venv/bin/python" -c 'import torch' 2>/dev/null || { echo "torch install failed" >&2; exit 1; }
  fi
fi
echo "metarec setup: installing metarec$extras" >&2
"${pip[@]}" install -e ".$extras" 2>&1 | grep -v "is ignored" >&2 || true
"$venv/bin/python" -c 'import flows.cli' || { echo "metarec install failed" >&2; exit 1; }
echo "$want" > "$stamp"
