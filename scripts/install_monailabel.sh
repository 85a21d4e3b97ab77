#!/usr/bin/env bash
# Light, CPU-only install of MONAI Label 0.8.5 next to monai_iqad (no sam2, no torchvision, no CUDA torch).
# Usage: bash scripts/install_monailabel.sh [VENV_DIR]        (default .venv-label)
#
# Why not `pip install monailabel`: it pulls sam2 and a multi-GB CUDA torch, and today it is broken on its own
# (pydicom 3 breaks its unguarded `pydicom_seg` import). So: torch first (CPU), monailabel with --no-deps, then the
# server's real dependencies under constraints: pydicom<3 and dicomweb-client<0.60 (which needs pydicom 3), and
# numpy<2 through pydicom-seg. monai_iqad itself supports numpy 1.26 and pydicom 2.4, which this produces.
set -euo pipefail
VENV="${1:-.venv-label}"
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/.."
bash "$HERE/setup_env.sh" "$VENV" "demo"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pipq() { python -m pip "$@" 2> >(grep -v "is ignored" >&2); }
TORCH_NOW="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
printf 'torch==%s\npydicom>=2.4.4,<3\ndicomweb-client>=0.59.1,<0.60\nnumpy<2\n' "$TORCH_NOW" > "$CONSTRAINTS"
pipq install -q -c "$CONSTRAINTS" "numpy<2" "pydicom>=2.4.4,<3"
pipq install -q --no-deps "monailabel==0.8.5"
pipq install -q -c "$CONSTRAINTS" 'uvicorn>=0.29.0' 'pydantic>=2.7.0' 'pydantic-settings>=2.2.1' 'python-dotenv>=1.0.1' \
  'fastapi>=0.110.2' 'python-multipart>=0.0.9' 'httpx>=0.27.0' 'schedule>=1.2.1' 'dicomweb-client[gcp]>=0.59.1' \
  'timeloop>=1.0.2' 'expiringdict>=1.2.2' 'expiring_dict>=1.1.0' 'cachetools>=5.3.3' 'watchdog>=4.0.0' \
  'pydicom-seg>=0.4.1' 'pynrrd>=1.0.0' 'girder-client>=3.2.3' 'pyyaml>=6.0.1' 'filelock>=3.11.0' 'passlib>=1.7.4' \
  'pyjwt>=2.8.0' 'bcrypt>=4.1.2' 'requests>=2.31.0' 'requests-toolbelt>=1.0.0' 'urllib3>=2.2.1' 'google-auth>=2.29.0' \
  'psutil' 'itk-core' 'tqdm' 'pytest>=7'
python - <<'PY'
import monailabel, numpy, pydicom, torch
import monailabel.app  # noqa: F401  (fails here if a server dependency is missing)
import monai_iqad.label  # noqa: F401
print(f"monailabel {monailabel.__version__} | numpy {numpy.__version__} | pydicom {pydicom.__version__} | torch {torch.__version__}")
PY
