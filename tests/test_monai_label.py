"""End-to-end MONAI Label test: tiny bundles trained on their demo data, a real server started with
``monai-iqad label start`` on 127.0.0.1, and real requests (infer by upload and by id, errors, path refusal,
temp-file cleanup, missing weights, a train task).

Needs the MONAI Label venv (``bash scripts/install_monailabel.sh``); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("monailabel")
requests = pytest.importorskip("requests")

from dicom_files import dicom_file  # noqa: E402
from label_server import free_port, label_server  # noqa: E402

from monai_iqad.data import IQAD_DATASETS  # noqa: E402

pytestmark = [pytest.mark.label, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
SAQM, MKCNET, UNTRAINED = "ultrasound_saqm_iqa", "fundus_eyeq_mkcnet_iqad", "ultrasound_saqm_untrained"
OVERLAYS = "demo.json,tiny.json"
TINY = {"width": 0.0625, "max_epochs": 1, "val_interval": 1, "num_workers": 0}


def _copy_bundle(name: str, dst: Path, as_name: str | None = None, with_data: bool = True) -> Path:
    src = REPO / "bundles" / name
    if not (src / "configs" / "train.json").is_file():
        pytest.skip(f"bundle {name} not in this checkout")
    ignore = shutil.ignore_patterns("models", "eval", *(() if with_data else ("demo_data",)))
    out = dst / (as_name or name)
    shutil.copytree(src, out, ignore=ignore)
    (out / "configs" / "tiny.json").write_text(json.dumps(TINY), encoding="utf-8")
    return out


def _train_on_demo_data(bundle: Path) -> None:
    """The bundle's own training (train.json + demo.json + tiny.json) on its demo data → models/model.pt."""
    from monai.bundle import ConfigWorkflow

    configs = [str(bundle / "configs" / f) for f in ("train.json", *OVERLAYS.split(","))]
    wf = ConfigWorkflow(config_file=configs, logging_file=False, workflow_type="train", bundle_root=str(bundle))
    wf.initialize()
    wf.run()
    wf.finalize()
    assert (bundle / "models" / "model.pt").is_file()


def _png(path: Path, name: str = "camera", size: int = 96) -> Path:
    from PIL import Image
    from skimage import data

    img = getattr(data, name)()
    Image.fromarray(img[:size, :size]).save(path)
    return path


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, workdir: Path, studies: Path, bundles: Path) -> None:
        self.url, self.proc, self.workdir, self.studies, self.bundles = url, proc, workdir, studies, bundles

    def post(
        self, model: str, image: str | None = None, file: Path | None = None, params: dict | None = None, **kwargs
    ):
        files = {"file": (file.name, file.read_bytes())} if file is not None else None
        data = {"params": json.dumps(params)} if params is not None else None
        q = {"image": image} if image is not None else {}
        return requests.post(f"{self.url}/infer/{model}", params=q, files=files, data=data, timeout=120, **kwargs)

    def info(self) -> dict:
        r = requests.get(f"{self.url}/info/", timeout=30)
        r.raise_for_status()
        return r.json()

    def upload_files(self) -> list[str]:
        """Files left in the server's temp folder, except MONAI Label's logging config (``tmp*.json``)."""
        tmp = self.workdir / "tmp"
        return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.suffix != ".json")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    bundles, studies, workdir = root / "bundles", root / "studies", root / "work"
    bundles.mkdir()
    studies.mkdir()
    t0 = time.time()
    for name in (SAQM, MKCNET):
        _train_on_demo_data(_copy_bundle(name, bundles))
    _copy_bundle(SAQM, bundles, as_name=UNTRAINED, with_data=False)  # served without weights
    print(f"tiny bundles trained in {time.time() - t0:.1f} s")

    _png(studies / "cam.png")
    for name in ("coins", "moon", "page", "text"):
        _png(studies / f"{name}.png", name)
    shutil.copy(dicom_file("US1_UNCR.dcm", "examples_rgb_color.dcm"), studies / "us1.dcm")  # ultrasound, 1 frame

    port = free_port()
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # this checkout's code
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath)
    cmd = [
        sys.executable,
        "-m",
        "monai_iqad.cli",
        "label",
        "start",
        "--studies",
        str(studies),
        "--port",
        str(port),
        "--bundles-dir",
        str(bundles),
        "--overlays",
        OVERLAYS,
        "--workdir",
        str(workdir),
        "--quality-threshold",
        "0.5",
        "--triage-quality",
        SAQM,
        "--triage-diagnosis",
        MKCNET,
        "--log-level",
        "WARNING",
    ]
    with label_server(cmd, port, env, root / "server.log", timeout=90) as (url, proc):
        print(f"server up in {time.time() - t0:.1f} s since start of fixture")
        yield Server(url, proc, workdir, studies, bundles)


def test_info_lists_tasks_and_missing_weights(server):
    info = server.info()
    models = info["models"]
    assert set(models) == {SAQM, MKCNET, UNTRAINED, "triage"}
    assert models[SAQM]["weights"].startswith("models/model.pt")
    assert models[UNTRAINED]["weights"] == "missing: train the bundle first"
    assert "missing" in models[UNTRAINED]["description"]
    assert models["triage"]["quality_model"] == SAQM and models["triage"]["diagnosis_model"] == MKCNET
    assert set(info["trainers"]) == {SAQM, MKCNET, UNTRAINED}
    assert info["monai_iqad"]["bundles"][UNTRAINED]["weights"].startswith("missing")
    assert info["monai_iqad"]["quality_threshold"] == 0.5


def test_saqm_upload_png(server, tmp_path):
    r = server.post(SAQM, file=_png(tmp_path / "astro.png", "astronaut"))
    assert r.status_code == 200, r.text
    q = r.json()["quality"]
    assert 0.0 <= q["score"] <= 1.0 and q["model"] == SAQM
    grid = q["patch_scores"]
    assert q["patch_grid"] == [3, 3] and len(grid) == 3 and all(len(row) == 3 for row in grid)
    assert sum(map(sum, grid)) / 9 == pytest.approx(q["score"], abs=1e-3)


def test_mkcnet_by_datastore_id_dicom(server):
    r = server.post(MKCNET, image="us1")
    assert r.status_code == 200, r.text
    out = r.json()
    info = IQAD_DATASETS["eyeq"]
    d, q = out["diagnosis"], out["quality"]
    assert list(d["probabilities"]) == list(info.diagnosis_names)
    assert len(q["probabilities"]) == info.num_quality
    for head, key in ((d, "label"), (q, "grade")):
        probs = head["probabilities"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
        assert head[key] == max(probs, key=probs.get)


def test_triage_gate_follows_threshold(server):
    r = server.post("triage", image="cam")
    assert r.status_code == 200, r.text
    out = r.json()
    score = out["quality"]["score"]
    assert out["quality_threshold"] == 0.5 and out["quality_score"] == score
    assert out["gated_by_quality"] is (score < 0.5) and out["diagnosis"]["gated_by_quality"] is (score < 0.5)
    assert sum(out["diagnosis"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    for threshold, gated in ((0.0, False), (1.0, True)):
        r = server.post("triage", image="cam", params={"quality_threshold": threshold})
        assert r.status_code == 200, r.text
        assert r.json()["gated_by_quality"] is gated and r.json()["quality_threshold"] == threshold


def test_multiframe_dicom_and_nifti_uploads(server, tmp_path):
    import nibabel as nib
    import numpy as np

    multi = Path(dicom_file("SC_rgb_2frame.dcm", "OBXXXX1A_2frame.dcm", "examples_ybr_color.dcm"))
    for frame in (0, 1):
        r = server.post(SAQM, file=multi, params={"frame": frame, "patch_scores": False})
        assert r.status_code == 200, r.text
        assert "patch_scores" not in r.json()["quality"]
    r = server.post(SAQM, file=multi, params={"frame": 99})
    assert r.status_code == 422 and "frame" in r.json()["detail"]

    volume = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((64, 64, 4), dtype=np.float32), np.eye(4)), volume)
    r = server.post(MKCNET, file=volume, params={"slice": 2})
    assert r.status_code == 200, r.text
    r = server.post(MKCNET, file=volume)
    assert r.status_code == 422 and "slice" in r.json()["detail"]


def test_corrupt_upload_is_a_clear_error_and_leaves_no_temp_file(server, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500))
    fake_dicom = tmp_path / "broken.dcm"
    fake_dicom.write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(200))
    for file, model in ((bad, SAQM), (fake_dicom, MKCNET), (bad, "triage")):
        r = server.post(model, file=file)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "uploaded file" in detail and str(server.workdir) not in detail
    assert server.post(SAQM, image="cam").status_code == 200  # still serving
    assert server.proc.poll() is None
    assert server.upload_files() == []


def test_ids_outside_the_datastore_are_refused(server):
    studies_file = str(server.studies / "cam.png")
    cases = [
        ({"image": "../studies/cam"}, 400),
        ({"image": studies_file}, 400),  # an absolute path, even of a datastore file
        ({"image": "/etc/hostname"}, 400),
        ({"image": "cam", "params": {"image": "/etc/hostname"}}, 400),
        ({"image": "no_such_image"}, 404),
    ]
    for kwargs, status in cases:
        r = server.post(SAQM, **kwargs)
        assert r.status_code == status, (kwargs, r.text)
    assert server.post("no_such_model", image="cam").status_code == 404
    r = requests.put(
        f"{server.url}/datastore/image",
        params={"image": "../escaped"},
        files={"file": ("x.png", (server.studies / "cam.png").read_bytes())},
        timeout=30,
    )
    assert r.status_code == 400
    assert not (server.studies.parent / "escaped.png").exists()
    assert server.upload_files() == []


def test_missing_or_unusable_weights_refused(server):
    r = server.post(UNTRAINED, image="cam")
    assert r.status_code == 409 and "train the bundle first" in r.json()["detail"]
    import torch

    weights = server.bundles / UNTRAINED / "models" / "model.pt"
    weights.parent.mkdir(exist_ok=True)
    torch.save({"not": torch.zeros(1)}, weights)  # weights of another network
    try:
        r = server.post(UNTRAINED, image="cam")
        assert r.status_code == 409 and "does not fit" in r.json()["detail"]
        assert server.info()["models"][UNTRAINED]["weights"].startswith("unusable")
    finally:
        weights.unlink()
    assert server.info()["models"][UNTRAINED]["weights"].startswith("missing")


def test_train_task_from_datastore_labels(server, tmp_path):
    model = server.bundles / SAQM / "models" / "model.pt"
    before = model.stat().st_mtime_ns
    for i, image in enumerate(("cam", "coins", "moon", "page")):
        r = requests.put(
            f"{server.url}/datastore/image/info",
            params={"image": image},
            data={"info": json.dumps({"mos": 1.5 + i})},
            timeout=30,
        )
        assert r.status_code == 200, r.text
    label = tmp_path / "text.json"  # a label JSON for the fifth image
    label.write_text(json.dumps({"mos": 4.2}))
    r = requests.put(
        f"{server.url}/datastore/label",
        params={"image": "text", "tag": "final"},
        files={"label": ("text.json", label.read_bytes())},
        timeout=30,
    )
    assert r.status_code == 200, r.text

    r = requests.post(f"{server.url}/train/{SAQM}", json={"max_epochs": 1, "mos_range": [1, 5]}, timeout=30)
    assert r.status_code == 200, r.text
    deadline = time.time() + 150
    while time.time() < deadline:
        status = requests.get(f"{server.url}/train/", timeout=30).json()
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1)
    assert status["status"] == "DONE", "\n".join(status.get("details", []))
    stats = server.info()["train_stats"][SAQM]
    assert stats["epochs"] == 1 and stats["num_training"] + stats["num_validation"] == 5
    assert stats["published"] == str(model) and model.stat().st_mtime_ns != before
    assert json.loads(model.with_name("model.pt.json").read_text())["source"] == "monai_iqad.label fine-tune"
    assert server.post(SAQM, image="cam").status_code == 200  # the server reloads the new weights


def test_parse_train_request_is_typed():
    from monai_iqad.label.safety import InvalidParameterError
    from monai_iqad.label.train import parse_train_request

    out = parse_train_request(
        {
            "max_epochs": "3",
            "pretrained": "false",
            "mos_range": [1, 5],
            "images": ["a"],
            "learning_rate": 0.01,
            "num_workers": 0,
            "model": "x",
            "gpus": "all",
        },
        "saqm",
    )
    assert out["max_epochs"] == 3 and out["pretrained"] is False and out["mos_range"] == [1.0, 5.0]
    assert out["images"] == ["a"] and out["overrides"] == {"learning_rate": 0.01, "num_workers": 0}
    for bad in (
        {"max_epochs": 0},
        {"max_epochs": "$import os"},
        {"images": ["../x"]},
        {"device": "cuda; rm"},
        {"learning_rate": "$@x"},
        {"val_split": 1.0},
        {"publish": "maybe"},
    ):
        with pytest.raises((InvalidParameterError, ValueError)):
            parse_train_request(bad, "saqm")
    with pytest.raises(InvalidParameterError, match="SAQM"):
        parse_train_request({"mos_range": [0, 1]}, "mkcnet")
