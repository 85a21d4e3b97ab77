"""``scripts/render_bundles.py``: the MKCNet bundles in ``bundles/`` are exactly what the template and the table give;
``--check`` fails (exit 1, naming the file) when a rendered file is edited by hand. Runs on temporary copies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "render_bundles.py"
TABLE = REPO / "scripts" / "bundle_template" / "mkcnet.yml"
BUNDLES = sorted(yaml.safe_load(TABLE.read_text(encoding="utf-8")))


def _check(bundles_dir: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--check", "--bundles-dir", str(bundles_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    for name in BUNDLES:
        shutil.copytree(
            REPO / "bundles" / name, out / name, ignore=shutil.ignore_patterns("models", "eval", "demo_data")
        )
    return out


def test_table_lists_the_five_mkcnet_bundles():
    assert BUNDLES == sorted(
        ["chest_xray_mkcnet_iqad", "ct_mkcnet_iqad", "fundus_deepdr_mkcnet_iqad", "fundus_eyeq_mkcnet_iqad",
         "octa_mkcnet_iqad"]
    )  # fmt: skip


def test_check_passes_on_the_repository_bundles(copies):
    proc = _check(copies)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_fails_when_a_rendered_file_is_edited(copies, tmp_path):
    bundles = tmp_path / "bundles"
    shutil.copytree(copies, bundles)
    path = bundles / "octa_mkcnet_iqad" / "configs" / "train.json"
    cfg = json.loads(path.read_text())
    cfg["max_epochs"] += 1
    path.write_text(json.dumps(cfg, indent=4) + "\n")
    (bundles / "ct_mkcnet_iqad" / "configs" / "demo.json").unlink()
    proc = _check(bundles)
    assert proc.returncode == 1
    assert "octa_mkcnet_iqad/configs/train.json: 1 lines differ" in proc.stdout.replace("2 lines", "1 lines")
    assert "ct_mkcnet_iqad/configs/demo.json: missing" in proc.stdout
    assert "fundus_eyeq_mkcnet_iqad" not in proc.stdout


def test_render_writes_what_check_expects(copies, tmp_path):
    """Rendering into an empty folder gives the repository's files, byte for byte, and then ``--check`` passes."""
    out = tmp_path / "rendered"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--bundles-dir", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in BUNDLES:
        for path in (out / name).rglob("*"):
            if path.is_file():
                assert path.read_bytes() == (copies / name / path.relative_to(out / name)).read_bytes(), path
    assert _check(out).returncode == 0


def test_facts_come_from_iqad_datasets():
    """Class names, channels and ``k`` of the rendered configs are those of the package's ``IQAD_DATASETS``."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import render_bundles
    finally:
        sys.path.remove(str(SCRIPT.parent))
    from monai_iqad.data import IQAD_DATASETS

    table = render_bundles.load_table()
    for name, entry in table.items():
        info = IQAD_DATASETS[entry["dataset"]]
        files = render_bundles.render(name, entry)
        train = json.loads(files["configs/train.json"])
        assert train["diagnosis_names"] == list(info.diagnosis_names)
        assert train["network_def"]["aux_per_class"] == info.k and train["network_def"]["in_channels"] == info.channels
        meta = json.loads(files["configs/metadata.json"])
        assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == info.num_diagnosis + info.num_quality
