#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install monai_iqad into it without pulling a CUDA torch build on a
# CPU-only machine. Usage: bash scripts/setup_env.sh VENV_DIR [EXTRAS]
#   TORCH_SPEC        torch requirement installed first (default: torch==2.13.0, a CPU build on this project's CI;
#                     on another CPU-only Linux machine use e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu)
#   TORCH_INDEX_URL   optional index for the torch install
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
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pipq install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    pipq install -q "$TORCH_SPEC"
  fi
fi
python -c "import torch; print('torch', torch.__version__, '| CUDA available:', torch.cuda.is_available())"
pipq install -q -e ".[${EXTRAS}]"
python -c "import monai, monai_iqad; print('monai', monai.__version__, '| monai_iqad', monai_iqad.__version__)"
