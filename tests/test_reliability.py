"""Issue 15: errors a user can read, no silent wrong results (images, datalists, folders, file writes).

Each test builds a tiny broken input and checks the message names the file / item / field; one test runs a real
``python -m monai.bundle run`` in a subprocess and checks what the user sees.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image
from reliability_testing import run_bundle_cli, tiny_saqm_run_args

from monai_iqad.data import load_datalist, read_image
from monai_iqad.data.datalist import (
    DatalistError,
    EmptyDatalistError,
    find_images,
    labelled_items,
    list_images,
)
from monai_iqad.data.image_io import ImageReadError
from monai_iqad.transforms.intensity import EnsureChannels, EnsureClassLabel, NormalizeMOS
from monai_iqad.utils import errors
from monai_iqad.utils.errors import EmptyDataError, FileWriteError, MonaiIqadError
from monai_iqad.utils.io import atomic_write, atomic_write_text, remove_stale_temporaries


def _png(path: Path, value: int = 100) -> Path:
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------ the error surface
def test_project_errors_share_one_base_and_keep_their_builtin_base():
    assert issubclass(ImageReadError, MonaiIqadError) and issubclass(ImageReadError, ValueError)
    assert issubclass(DatalistError, MonaiIqadError) and issubclass(DatalistError, ValueError)
    assert issubclass(EmptyDatalistError, EmptyDataError) and issubclass(EmptyDatalistError, DatalistError)
    assert issubclass(FileWriteError, OSError)
    e = DatalistError("dl.json ['training'] item 3: bad", file="dl.json", item=3, field="mos")
    assert (e.file, e.item, e.field) == ("dl.json", 3, "mos") and e.hint


def test_find_project_error_unwraps_monai_config_and_transform_wrappers():
    inner = ImageReadError("/data/x.png: corrupt", file="/data/x.png")
    try:
        try:
            try:
                raise inner
            except ImageReadError as e:
                raise RuntimeError("applying transform <LoadImage2Dd>") from e
        except RuntimeError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: $@evaluator.run()") from e
    except RuntimeError as outer:
        assert errors.find_project_error(outer) is inner
    assert errors.find_project_error(RuntimeError("not ours")) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda: EnsureClassLabel(3, label_name="diagnosis")(5, name="img.png"),
        lambda: NormalizeMOS((0, 9))(42.0, name="img.png"),
        lambda: EnsureChannels(3)(MetaTensor(torch.zeros(2, 8, 8), meta={"filename_or_obj": "img.png"})),
    ],
    ids=["label_out_of_range", "mos_out_of_range", "wrong_channel_count"],
)
def test_data_errors_of_transforms_are_project_errors(call):
    """Bad labels, MOS and channel counts found by transforms reach the bundle excepthook as one message."""
    with pytest.raises(MonaiIqadError, match="img.png"):
        call()


def test_find_project_error_reads_dataloader_worker_text():
    # torch re-raises a worker's error in the main process as <type>(text of the worker traceback)
    text = textwrap.dedent(
        """\
        Caught RuntimeError in DataLoader worker process 0.
        Original Traceback (most recent call last):
          File "x.py", line 1, in f
        monai_iqad.data.image_io.ImageReadError: /data/y.png: 3 non-finite pixel value(s)

        The above exception was the direct cause of the following exception:

        Traceback (most recent call last):
        RuntimeError: applying transform <LoadImage2Dd>
        """
    )
    found = errors.find_project_error(RuntimeError(text))
    assert isinstance(found, ImageReadError)
    assert str(found) == "/data/y.png: 3 non-finite pixel value(s)"
    assert found.hint == ImageReadError.hint
    text = (
        "Original Traceback (most recent call last):\nmonai_iqad.utils.errors.FileWriteError: /m/model.pt: cannot write"
    )
    found = errors.find_project_error(RuntimeError(text))
    assert isinstance(found, FileWriteError) and str(found) == "/m/model.pt: cannot write"


def test_excepthook_prints_one_message_and_hint_unless_debug(capsys, monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    try:
        raise RuntimeError("Failed to evaluate ConfigExpression") from DatalistError("dl.json: bad item", item=2)
    except RuntimeError as e:
        errors.bundle_excepthook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "monai_iqad error (DatalistError): dl.json: bad item"
    assert err.splitlines()[1].startswith("hint: ") and "Traceback" not in err

    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    try:
        raise RuntimeError("wrapper") from DatalistError("dl.json: bad item")
    except RuntimeError as e:
        errors.bundle_excepthook(type(e), e, e.__traceback__)
    assert "Traceback (most recent call last)" in capsys.readouterr().err

    monkeypatch.delenv(errors.DEBUG_ENV)
    try:
        raise KeyError("not ours")  # MONAI's / Python's behaviour is kept for other errors
    except KeyError as e:
        errors.bundle_excepthook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "monai_iqad error" not in err


def test_hook_is_only_installed_in_bundle_runs():
    assert not errors.is_bundle_run()  # pytest imported monai_iqad: nothing installed
    assert sys.excepthook is not errors.bundle_excepthook
    assert logging.getLogRecordFactory() is not errors._project_record_factory


def test_bundle_run_shows_the_project_error_alone(tmp_path):
    """A real `python -m monai.bundle run` of the SAQM inference on a folder with a non-image `.png`."""
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "bad.png").write_text("not an image")
    args = [
        "--config_file",
        "configs/inference.json",
        "--input_dir",
        str(images),
        "--output_dir",
        str(tmp_path / "eval"),
    ]
    proc = run_bundle_cli("ultrasound_saqm_iqa", [*args, "--load_pretrain", "false", "--on_error", "stop"])
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    start = next(i for i, line in enumerate(lines) if line.startswith("monai_iqad error"))
    assert f"{images / 'bad.png'}: not a readable PNG/JPEG/BMP/TIFF image" in lines[start]
    assert lines[start + 1].startswith("hint: ")


def test_bundle_training_on_nothing_fails_naming_split_and_domain(tmp_path):
    """SAQM `target_only` training whose target items all have `mos: null` (MONAI used to skip the run, exit 0)."""
    proc = run_bundle_cli("ultrasound_saqm_iqa", tiny_saqm_run_args(tmp_path, target_train_mos=None))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    message = next(line for line in proc.stderr.splitlines() if line.startswith("monai_iqad error"))
    assert message == (
        f"monai_iqad error (EmptyDatalistError): {tmp_path / 'datalist.json'} ['training']: nothing to train on: the "
        "'training' split has no labelled item of domain 'target' (1 item(s), all with mos null)"
    )
    assert not (tmp_path / "models" / "model.pt").exists()


# ------------------------------------------------------------------------------------------ images
def test_non_finite_nifti_is_an_error_naming_the_file(tmp_path):
    nib = pytest.importorskip("nibabel")
    data = np.ones((6, 5), np.float32)
    data[1, 2], data[3, 3] = np.nan, np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(
        ImageReadError, match=r"nan\.nii\.gz: 2 non-finite pixel value\(s\) of 30 \(1 NaN, 1 infinite"
    ) as e:
        read_image(path)
    assert e.value.file == str(path)
    nib.save(nib.Nifti1Image(np.ones((6, 5), np.float32), np.eye(4)), tmp_path / "ok.nii.gz")
    assert np.isfinite(read_image(tmp_path / "ok.nii.gz")[0]).all()


def test_symlink_loop_and_broken_link_are_named_as_such(tmp_path):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageReadError, match="loop.png: symbolic link loop"):
        read_image(loop)
    with pytest.raises(ImageReadError, match="broken.png: broken symbolic link"):
        read_image(broken)
    with pytest.raises(ImageReadError, match="missing.png: image file not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "dl.json").write_text(json.dumps({"test": [{"image": "loop.png"}]}))
    with pytest.raises(DatalistError, match=r"dl.json \['test'\] item 0 \(image 'loop.png'\): symbolic link loop"):
        load_datalist(tmp_path / "dl.json", "test", require_mos=False)


def test_folder_listing_counts_and_lists_skipped_files(tmp_path, caplog):
    _png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "sub").mkdir()
    _png(tmp_path / "sub" / "b.png")
    (tmp_path / "linkdir").symlink_to(tmp_path / "sub")
    items, skipped = find_images(tmp_path)
    # the loop has an image name: it is an item, so the reader reports it (never silently left out)
    assert [Path(i["image"]).name for i in items] == ["a.png", "loop.png", "b.png"]
    assert {Path(s["file"]).name: s["reason"].split(" (")[0] for s in skipped} == {
        "linkdir": "symbolic link to a folder",
        "notes.txt": "not an image file name",
    }
    with caplog.at_level("WARNING"):
        assert len(list_images(tmp_path)) == 3
    assert "3 image file(s); skipped 2 other file(s)" in caplog.text and "notes.txt" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(EmptyDataError, match=r"empty: no image files found \(1 other file\(s\) skipped"):
        list_images(empty)


# ------------------------------------------------------------------------------------------ datalists
def _datalist(tmp_path: Path, items: list[dict], **extra) -> Path:
    _png(tmp_path / "a.png")
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"training": items, **extra}))
    return path


@pytest.mark.parametrize("domain", ["source", "target"])
@pytest.mark.parametrize("bad", ["NaN", "Infinity"])
def test_non_finite_mos_is_refused_in_every_domain(tmp_path, domain, bad):
    items = [{"image": "a.png", "mos": 1.0, "domain": domain}, {"image": "a.png", "mos": "@", "domain": domain}]
    path = _datalist(tmp_path, items)
    path.write_text(path.read_text().replace('"@"', bad))  # JSON extension that json.load accepts
    with pytest.raises(
        DatalistError, match=r"dl.json \['training'\] item 1 .*'mos' must be a finite number, or null"
    ) as e:
        load_datalist(path, require_mos=False)
    assert (e.value.item, e.value.field) == (1, "mos")
    # null stays the way to say "unlabelled"
    items[1]["mos"] = None
    path.write_text(json.dumps({"training": items}))
    assert [it["labelled"] for it in load_datalist(path, require_mos=False)] == [1, 0]


def test_mos_outside_range_names_datalist_and_item(tmp_path):
    items = [{"image": "a.png", "mos": 3.0, "domain": "target"}, {"image": "a.png", "mos": 55.0, "domain": "target"}]
    path = _datalist(tmp_path, items, mos_range={"target": [1, 5]})
    with pytest.raises(
        DatalistError, match=r"dl.json \['training'\] item 1 .*'mos' 55 is outside the target mos_range \[1, 5\]"
    ):
        load_datalist(path)  # the range recorded in the datalist
    assert len(load_datalist(path, mos_range=[0, 100])) == 2  # an explicit range wins
    with pytest.raises(DatalistError, match="item 0 .*'mos' 3 is outside the target mos_range \\[0, 1\\]"):
        load_datalist(path, mos_range={"target": [0, 1]})
    items[1]["mos"] = 5.2  # within the 5 % tolerance that NormalizeMOS clips
    path.write_text(json.dumps({"training": items, "mos_range": {"target": [1, 5]}}))
    assert len(load_datalist(path)) == 2


def test_training_on_nothing_fails_naming_split_and_domain(tmp_path):
    items = [{"image": "a.png", "mos": 2.0, "domain": "source"}, {"image": "a.png", "mos": None, "domain": "target"}]
    path = _datalist(tmp_path, items)
    target = load_datalist(path, domain="target", require_mos=False)
    with pytest.raises(
        EmptyDataError, match=r"dl.json \['training'\]: nothing to train on: .*no labelled item of domain 'target'"
    ):
        labelled_items(target, path, "training", "target")
    assert labelled_items(load_datalist(path, domain="source")) and labelled_items([{"image": "x"}])
    with pytest.raises(EmptyDataError, match=r"'validation' split has no item of domain 'target'"):
        path.write_text(json.dumps({"training": items, "validation": items[:1]}))
        load_datalist(path, "validation", domain="target")


# ------------------------------------------------------------------------------------------ file writes
def test_failed_write_names_the_path_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def disk_full(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(
        FileWriteError, match=r"model.pt: cannot write the file \(No space left on device, errno 28\)"
    ) as e:
        atomic_write(target, disk_full)
    assert e.value.errno == 28 and e.value.file == str(target)
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["model.pt"]


def test_torch_save_failure_names_the_path(tmp_path):
    """A real write failure inside ``torch.save`` (a file size limit: ``write`` fails like on a full disk)."""
    resource = pytest.importorskip("resource")
    import signal

    import torch

    from monai_iqad.utils.io import atomic_torch_save

    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, old_limit[1]))
    try:
        with pytest.raises(FileWriteError, match=r"checkpoint.pt: cannot write the file \(File too large, errno 27\)"):
            atomic_torch_save({"w": torch.zeros(100000)}, tmp_path / "checkpoint.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_are_removed(tmp_path):
    target = tmp_path / "checkpoint.pt"
    stale = [tmp_path / ".checkpoint.pt.abc123.tmp", tmp_path / ".checkpoint.pt.x.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 10)
    keep = [tmp_path / ".model.pt.abc.tmp", tmp_path / "checkpoint.pt.tmp"]
    for p in keep:
        p.write_bytes(b"y")
    assert sorted(remove_stale_temporaries(target)) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in keep)
    atomic_write_text(target, "ok")
    assert target.read_text() == "ok"
