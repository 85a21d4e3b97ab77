#!/usr/bin/env bash
# Create (or reuse) a virtual environment, install PyTorch first (the build you choose), then monai_iqad.
# Usage: bash scripts/setup_env.sh VENV_DIR [EXTRAS]            (EXTRAS: comma list, e.g. "demo" or "test,onnx,demo,itk")
#
# Which torch build is installed (only when the environment has no torch yet; an existing torch is kept):
#   TORCH_INDEX_URL unset (default): whatever `pip install torch==2.13.0` resolves from your pip configuration. From
#                     PyPI on Linux x86_64 that is a CUDA build (several GB); on this project's CI the configured
#                     local wheel is a CPU build.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu     CPU-only build (small; any machine)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128   CUDA 12.8 build for a GPU machine (pick the cuXXX that
#                     your driver supports: https://pytorch.org/get-started/locally/)
#   TORCH_SPEC        the torch requirement (default torch==2.13.0)
# The script prints the torch build it ended with ("+cpu" / CUDA version) and whether a GPU is usable.
set -euo pipefail
VENV="${1:-.venv}"
EXTRAS="${2:-demo}"
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
# pip prints a warning per missing local mirror folder on some machines: hide those lines, keep pip's exit status
pipq() { python -m pip "$@" 2> >(grep -v "is ignored" >&2); }
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pipq install -q --upgrade pip setuptools wheel
if ! python -c "import torch" 2>/dev/null; then
  TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
  # numpy with torch: a torch imported without numpy warns "Failed to initialize NumPy" (the torch wheel does not
  # depend on numpy); the PyTorch indexes serve numpy too
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pipq install -q "$TORCH_SPEC" "numpy>=1.24" --index-url "$TORCH_INDEX_URL"
  else
    pipq install -q "$TORCH_SPEC" "numpy>=1.24"
  fi
fi
pipq install -q -e ".[${EXTRAS}]"
python -c "import torch; print('torch', torch.__version__, '| CUDA build:', torch.version.cuda or 'none (CPU build)', '| GPU usable:', torch.cuda.is_available())"
python -c "import monai, monai_iqad; print('monai', monai.__version__, '| monai_iqad', monai_iqad.__version__)"
