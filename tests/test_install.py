"""The install story: declared requirements cover every import, extras are documented, the wheel builds without
setuptools warnings and without the bundles, and ``scripts/setup_env.sh`` documents the torch index."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTRA_NAMES = ("demo", "itk", "onnx", "label", "test", "all")
# import name -> distribution name, where they differ
DIST_OF = {
    "PIL": "pillow",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "ignite": "pytorch-ignite",
    "data_store": "pydicom-data",
}
# imported only by the MONAI Label app, whose server brings them (the [label] extra / install_monailabel.sh)
LABEL_ONLY = {"monailabel", "fastapi"}


def _setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    """``install_requires`` and ``extras_require`` as setup.py passes them to ``setuptools.setup`` (captured)."""
    import runpy

    import setuptools

    captured: dict = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = original
    return captured["install_requires"], captured["extras_require"]


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower()


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere in ``monai_iqad`` -> the files importing them."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for file in (REPO / "monai_iqad").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top not in ("monai_iqad", "__future__"):
                    found.setdefault(top, set()).add(str(file.relative_to(REPO)))
    return found


def test_pins_match_what_the_code_needs():
    requires, extras = _setup_lists()
    dists = {_dist(r): r for r in requires}
    assert dists["pytorch-ignite"] == "pytorch-ignite>=0.5.2", "Spearman/Kendall rank metrics arrived in ignite 0.5.2"
    assert {"pyyaml", "jsonschema", "torch", "monai"} <= set(dists)
    assert "itk" not in dists, "itk is the [itk] extra (1.5 GB, only the MetaImage/NRRD reader uses it)"
    assert re.fullmatch(r"torch>=[\d.]+", dists["torch"]), "torch as a floor only: never pin a CUDA/CPU build"
    assert set(EXTRA_NAMES) <= set(extras)
    assert {_dist(r) for r in extras["onnx"]} >= {"onnx", "onnxscript", "onnxruntime"}
    assert "pydicom-data" in {_dist(r) for r in extras["demo"]}
    assert {_dist(r) for r in extras["itk"]} == {"itk"}
    others = {_dist(r) for k, v in extras.items() if k not in ("all", "label") for r in v}
    assert {_dist(r) for r in extras["all"]} == others, "[all]: every extra except the MONAI Label server"


def test_every_import_is_declared():
    """Each third-party module imported by the package comes from install_requires (or the MONAI Label server)."""
    requires, _ = _setup_lists()
    declared = {_dist(r) for r in requires}
    missing = {
        f"{module} ({', '.join(sorted(files))})"
        for module, files in _third_party_imports().items()
        if module not in LABEL_ONLY and DIST_OF.get(module, module).lower() not in declared
    }
    assert not missing, f"imported but not in install_requires: {sorted(missing)}"
    assert "itk" not in _third_party_imports(), "itk must stay optional (imported only through MONAI's ITKReader)"


@pytest.mark.parametrize("doc", ["README.md", "docs/install.md"])
def test_extras_and_git_url_install_are_documented(doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    for name in EXTRA_NAMES:
        assert f"[{name}]" in text, f"{doc} does not name the [{name}] extra"
    assert re.search(r'pip install "monai_iqad(\[[a-z,]+\])? @ git\+https://', text), f"{doc}: git URL install"
    assert "TORCH_INDEX_URL" in text and "bundles/" in text


def test_setup_env_torch_index_and_numpy_before_torch_import():
    script = (REPO / "scripts" / "setup_env.sh").read_text(encoding="utf-8")
    header = "".join(line for line in script.splitlines(keepends=True) if line.startswith("#"))
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in header
    assert re.search(r"TORCH_INDEX_URL=https://download.pytorch.org/whl/cu\d+", header)
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    torch_install = next(i for i, line in enumerate(code) if '"$TORCH_SPEC"' in line)
    assert "numpy" in code[torch_install], "numpy installed with torch (else torch warns 'Failed to initialize NumPy')"
    first_use = next(i for i, line in enumerate(code) if "import torch;" in line)
    assert first_use > torch_install


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_wheel_builds_quietly_without_bundles(tmp_path):
    """``pip wheel`` of the tracked files: no setuptools warning blocks, SPDX licence, no bundles in the wheel."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")]
    proc = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in (proc.stdout + proc.stderr).splitlines() if re.search(r"Warning|deprecat|!!", line)]
    assert not noise, "setuptools printed warnings:\n" + "\n".join(noise[:20])
    (wheel,) = (tmp_path / "dist").glob("monai_iqad-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta and "License :: " not in meta
    assert not [n for n in names if n.startswith("bundles/")], "bundles are not part of the wheel"
    assert "monai_iqad/data/reader.py" in names
    data_files = [f for f in files if f.startswith("monai_iqad/") and f.endswith((".npz", ".json"))]
    assert set(data_files) <= set(names), f"package data missing from the wheel: {set(data_files) - set(names)}"
