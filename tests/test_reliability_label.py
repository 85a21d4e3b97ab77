"""Issue 15, MONAI Label: uploads validated as images before they are stored, a size cap, 4xx for malformed infers.

The validation functions are tested in any environment; the real-server test (an untrained SAQM bundle is enough:
every request here is refused before a model runs) needs the MONAI Label venv and is skipped elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_iqad.label.safety import UploadRejectedError, check_infer_request, check_upload

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, size: int = 32) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8)).save(path)
    return path


def test_text_file_named_png_is_refused_without_the_server_path(tmp_path):
    fake = tmp_path / "tmpabc.png"
    fake.write_text("this is not an image")
    with pytest.raises(UploadRejectedError) as e:
        check_upload(fake)
    assert e.value.status == 422
    assert str(e.value).startswith("the uploaded file is not a readable image (the uploaded file: not a readable PNG")
    assert str(tmp_path) not in str(e.value)
    check_upload(fake, read=False)  # size-only check (infer tasks read the file themselves)


def test_size_cap_and_empty_upload(tmp_path):
    image = _png(tmp_path / "a.png", 256)
    size = image.stat().st_size
    check_upload(image, max_bytes=size)
    with pytest.raises(
        UploadRejectedError, match=r"more than the .* MiB limit \(server option --conf max_upload_mb\)"
    ) as e:
        check_upload(image, max_bytes=size - 1)
    assert e.value.status == 413
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(UploadRejectedError, match="the uploaded file is empty"):
        check_upload(empty)


def test_volumes_are_accepted_and_nan_images_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    volume = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 3), np.float32), np.eye(4)), volume)
    check_upload(volume)  # a 3D volume is an image (the task asks for a slice)
    data = np.ones((16, 16), np.float32)
    data[0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(UploadRejectedError, match="1 non-finite pixel value"):
        check_upload(tmp_path / "nan.nii.gz")


def test_infer_request_without_image_or_file_is_a_400():
    with pytest.raises(UploadRejectedError, match="pass image=<datastore id> or upload a file") as e:
        check_infer_request("", None)
    assert e.value.status == 400
    check_infer_request("cam", None)
    check_infer_request("", object())


# --------------------------------------------------------------------------------------------------- real server
@pytest.mark.label
@pytest.mark.slow
def test_server_refuses_bad_uploads_and_malformed_infers_with_4xx(tmp_path):
    pytest.importorskip("monailabel")
    requests = pytest.importorskip("requests")
    import shutil

    from label_server import free_port, label_server

    bundles, studies, workdir = tmp_path / "bundles", tmp_path / "studies", tmp_path / "work"
    studies.mkdir()
    shutil.copytree(
        REPO / "bundles" / "ultrasound_saqm_iqa",
        bundles / "ultrasound_saqm_iqa",
        ignore=shutil.ignore_patterns("models", "eval", "demo_data"),
    )
    _png(studies / "cam.png")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "monai_iqad.cli", "label", "start", "--studies", str(studies), "--port", str(port)]
    cmd += ["--bundles-dir", str(bundles), "--workdir", str(workdir), "--log-level", "WARNING"]
    cmd += ["--conf", "max_upload_mb", "1", "--conf", "skip_trainers", "true"]
    with label_server(cmd, port, env, tmp_path / "server.log") as (url, proc):

        def put(name: str, content: bytes):
            return requests.put(
                f"{url}/datastore/image", params={"image": Path(name).stem}, files={"file": (name, content)}, timeout=60
            )

        r = put("notimg.png", b"not an image at all")
        assert r.status_code == 422 and "not a readable image" in r.json()["detail"], r.text
        big = np.random.default_rng(1).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)
        Image.fromarray(big).save(tmp_path / "big.png")  # > 1 MiB (random pixels do not compress)
        r = put("big.png", (tmp_path / "big.png").read_bytes())
        assert r.status_code == 413 and "max_upload_mb" in r.json()["detail"], r.text
        images = sorted(p.name for p in studies.iterdir() if p.suffix == ".png")
        assert images == ["cam.png"]  # nothing refused was stored
        r = put("ok.png", _png(tmp_path / "ok.png").read_bytes())
        assert r.status_code == 200, r.text
        assert (studies / "ok.png").is_file()
        big_label = {"label": ("ok.json", b"{}" + b" " * (2**20 + 1))}
        r = requests.put(f"{url}/datastore/label", params={"image": "ok", "tag": "final"}, files=big_label, timeout=60)
        assert r.status_code == 413, r.text

        r = requests.post(f"{url}/infer/ultrasound_saqm_iqa", timeout=60)
        assert r.status_code == 400 and "neither" in r.json()["detail"], r.text
        r = requests.post(
            f"{url}/infer/ultrasound_saqm_iqa", params={"image": "cam"}, data={"params": "{oops"}, timeout=60
        )
        assert r.status_code == 422 and "'params' is not valid JSON" in r.json()["detail"], r.text
        assert requests.get(f"{url}/info/", timeout=30).status_code == 200 and proc.poll() is None  # still serving
