"""Issue 15, folder/datalist inference: ``on_error`` ``stop``/``skip``, per-file error rows, a real bundle run."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_testing import run_bundle_cli

from monai_iqad.data import list_images, screen_images
from monai_iqad.data.image_io import ImageReadError
from monai_iqad.utils.errors import EmptyDataError


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / name)
    (folder / "b.png").write_text("not an image")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    return folder


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_skip_keeps_readable_items_and_writes_error_rows(tmp_path, num_workers):
    folder = _folder(tmp_path)
    errors = tmp_path / "eval" / "errors.csv"
    kept = screen_images(list_images(folder), "skip", errors, num_workers=num_workers)
    assert [Path(it["image"]).name for it in kept] == ["a.png", "c.png"]
    rows = _rows(errors)
    assert [(r["index"], Path(r["filename"]).name) for r in rows] == [("1", "b.png"), ("3", "loop.png")]
    assert "not a readable PNG/JPEG/BMP/TIFF image" in rows[0]["error"]
    assert "symbolic link loop" in rows[1]["error"]
    # a clean rerun leaves a header-only errors file, not the stale rows of the previous run
    screen_images(kept, "skip", errors)
    assert errors.read_text().strip() == "index,filename,error"


def test_stop_names_file_and_item_index(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(ImageReadError, match=r"b.png: not a readable") as e:
        screen_images(list_images(folder), "stop")
    assert e.value.item == 1 and e.value.file == str(folder / "b.png")


def test_nothing_readable_is_an_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("x")
    with pytest.raises(EmptyDataError, match=r"none of the 1 image\(s\) can be read \(first: .*bad.png"):
        screen_images([{"image": str(bad)}], "skip")
    with pytest.raises(ValueError, match="on_error must be one of"):
        screen_images([], "ignore")


def test_frame_and_slice_of_an_item_are_screened(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    kept = screen_images([{"image": str(path)}, {"image": str(path), "frame": 3}], "skip")
    assert kept == [{"image": str(path)}]  # frame 3 of a one-frame PNG is out of range


def test_bundle_folder_inference_skips_bad_files_and_records_them(tmp_path):
    """`python -m monai.bundle run` of the SAQM inference: scores for the readable files, error rows for the others."""
    folder = _folder(tmp_path)
    out = tmp_path / "eval"
    args = ["--config_file", "configs/inference.json", "--input_dir", str(folder), "--output_dir", str(out)]
    proc = run_bundle_cli(
        "ultrasound_saqm_iqa", [*args, "--load_pretrain", "false", "--num_workers", "0", "--width", "0.0625"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = _rows(out / "scores.csv")
    assert [Path(r["filename"]).name for r in scores] == ["a.png", "c.png"]
    assert all(np.isfinite(float(r["score"])) for r in scores)
    assert [Path(r["filename"]).name for r in _rows(out / "errors.csv")] == ["b.png", "loop.png"]
    assert "2 of 4 image(s) cannot be read, skipped" in proc.stdout + proc.stderr


def test_prediction_csv_keeps_rows_written_before_a_failure(tmp_path):
    """``write_interval``: rows computed before a later failure are on disk (atomically rewritten as they go)."""
    import torch
    from ignite.engine import Engine
    from monai.data import MetaTensor

    from monai_iqad.handlers import PredictionCSVWriter

    def step(engine, name):
        if name == "c.png":
            raise RuntimeError("the network failed on the third image")
        image = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": name})
        return {"image": image, "pred": torch.tensor([len(name) / 10])}

    out = tmp_path / "scores.csv"
    engine = Engine(step)
    PredictionCSVWriter(out, fields=["pred"], column_names={"pred": "score"}, write_interval=1).attach(engine)
    with pytest.raises(RuntimeError, match="third image"):
        engine.run(["a.png", "bb.png", "c.png"], max_epochs=1)
    assert [(r["filename"], float(r["score"])) for r in _rows(out)] == [("a.png", 0.5), ("bb.png", 0.6)]
    assert sorted(os.listdir(tmp_path)) == ["scores.csv"]  # no temporary file left
