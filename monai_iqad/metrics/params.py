"""Loader of the NIQE and BRISQUE model parameters shipped in ``monai_iqad/metrics/data/nr_iqa_params.npz``.

The file is made by ``scripts/fetch_nr_iqa_params.py`` from two Apache-2.0 PyPI packages (basicsr 1.4.2: the NIQE
pristine model of the official LIVE release; brisque 0.2.0: an RBF epsilon-SVR and its feature scaling). Attribution
and licences: ``monai_iqad/metrics/data/NOTICE.md`` and ``docs/metrics.md``. It holds plain float arrays only and is
read with ``allow_pickle=False`` after its sha256 is checked.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["PARAMS_FILE", "PARAMS_SHA256", "load_params"]

PARAMS_FILE = Path(__file__).resolve().parent / "data" / "nr_iqa_params.npz"
PARAMS_SHA256 = "eaa2e899edafafc515cc7e359beb5bd3a99166dfc8c9dc98bc5ccc604f90926a"


@functools.lru_cache(maxsize=4)
def _load(path: str, sha256: str | None) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: NR-IQA parameter file missing; rebuild it with `python scripts/fetch_nr_iqa_params.py`"
        )
    data = p.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise ValueError(f"{p}: sha256 {digest} does not match the expected {sha256} (corrupt or replaced file)")
    with np.load(p, allow_pickle=False) as npz:
        return {k: torch.from_numpy(np.array(npz[k], dtype=np.float64)) for k in npz.files}


def load_params(path: str | os.PathLike | None = None, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The NIQE/BRISQUE parameters as ``float64`` tensors (cached per path).

    Args:
        path: npz file with the keys below; default the shipped ``PARAMS_FILE``.
        sha256: expected digest. The shipped file is always checked against ``PARAMS_SHA256``; a user's file only
            when a digest is given.

    Returns:
        dict with ``niqe_mu`` (36,), ``niqe_cov`` (36, 36), ``niqe_window`` (7, 7), ``brisque_sv`` (770, 36),
        ``brisque_coef`` (770,), ``brisque_rho`` (), ``brisque_gamma`` (), ``brisque_min``/``brisque_max`` (36,).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the sha256 does not match.
    """
    if path is None:
        path, sha256 = PARAMS_FILE, sha256 or PARAMS_SHA256
    return _load(os.fspath(path), sha256)
