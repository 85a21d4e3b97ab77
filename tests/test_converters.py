"""Dataset converters on fake public layouts built in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monai_iqad.data import (
    ConversionError,
    convert_deepdr,
    convert_drac,
    convert_eyeq,
    convert_iqad_ct,
    convert_iqad_cxr,
    convert_md72,
    convert_tid2013,
    load_datalist,
    read_mkcnet_split,
)
from monai_iqad.data.converters.__main__ import main as converters_main

HEADER = "image_name,DR_label,IQ_label\n"


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _split_dataset(root: Path, folder: str, rows: dict[str, list[tuple[int, int]]], header: bool = True) -> Path:
    """Fake MKCNet dataset: <root>/<folder>/{train,val,test}.txt + Images/."""
    ds = root / folder
    for split, labels in rows.items():
        lines = [f"Images/{split}_{i}.png,{d},{q}" for i, (d, q) in enumerate(labels)]
        (ds).mkdir(parents=True, exist_ok=True)
        (ds / f"{split}.txt").write_text((HEADER if header else "") + "\n".join(lines) + "\n")
        for i in range(len(labels)):
            _touch(ds / "Images" / f"{split}_{i}.png")
    return ds


def _labels(path: Path, key: str, task: str = "iqad") -> list[tuple[int, int]]:
    return [(it["diagnosis"], it["quality"]) for it in load_datalist(path, key=key, task=task)]


# ----------------------------------------------------------------------------------------------- TID2013


def _fake_tid2013(root: Path) -> dict[str, float]:
    """3000-row mos_with_names.txt; only the 125 denoising images exist, with mixed-case names."""
    lines, mos = [], {}
    for ref in range(1, 26):
        for dist in range(1, 25):
            for level in range(1, 6):
                name = f"i{ref:02d}_{dist:02d}_{level}.bmp"
                value = round(7.0 - level + ref / 100 + dist / 1000, 5)
                lines.append(f"{value} {name}")
                mos[name] = value
                if dist == 9:  # as in the archive: I01_09_1.bmp, i01_09_2.bmp, I01_09_3.BMP ...
                    disk = name.upper() if level % 3 == 0 else (name.capitalize() if level % 2 else name)
                    _touch(root / "distorted_images" / disk)
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    return mos


def test_tid2013_selects_125_denoising_images_case_insensitively(tmp_path):
    mos = _fake_tid2013(tmp_path)
    out = convert_tid2013(tmp_path, tmp_path / "tid.json", val_fraction=0.2, test_fraction=0.2, seed=1)
    sections = {k: load_datalist(out, key=k) for k in ("training", "validation", "test")}
    assert [len(v) for v in sections.values()] == [75, 25, 25]
    all_items = [it for v in sections.values() for it in v]
    assert all(Path(it["image"]).is_file() for it in all_items)
    assert {it["distortion"] for it in all_items} == {9} and {it["domain"] for it in all_items} == {"source"}
    for it in all_items:
        assert it["mos"] == mos[Path(it["image"]).name.lower()]
    refs = [{it["reference"] for it in v} for v in sections.values()]
    assert not (refs[0] & refs[1] or refs[0] & refs[2] or refs[1] & refs[2])  # no content leakage
    assert json.loads(out.read_text())["mos_range"] == [0, 9]


def test_tid2013_errors(tmp_path):
    with pytest.raises(ConversionError, match="mos_with_names.txt"):
        convert_tid2013(tmp_path, tmp_path / "x.json")
    _fake_tid2013(tmp_path)
    with pytest.raises(ConversionError, match=r"i01_08_1\.bmp") as err:
        convert_tid2013(tmp_path, tmp_path / "x.json", distortions=(8,))
    assert "distorted_images" in str(err.value)
    (tmp_path / "mos_with_names.txt").write_text("5.0 i01_09_1.bmp\nnot-a-number i01_09_2.bmp\n")
    with pytest.raises(ConversionError, match=r"mos_with_names.txt:2"):
        convert_tid2013(tmp_path, tmp_path / "x.json")


# ----------------------------------------------------------------------------------------------- MD72


def test_md72_with_header_groups_and_labelled_fraction(tmp_path):
    rows = ["  Image , MOS , reference , rater_sd"]
    for g in range(12):
        for v in range(3):
            name = f"us/g{g}_v{v}.png"
            _touch(tmp_path / name)
            rows.append(f" {name} , {2 + v * 0.5 + g / 10} , liver{g} , 0.3 ")
    (tmp_path / "mos.csv").write_text("\n".join(rows) + "\n")
    out = convert_md72(
        tmp_path / "mos.csv",
        tmp_path / "md72.json",
        labelled_fraction=0.25,
        test_fraction=0.25,
        val_fraction=0.0,
        seed=0,
    )
    train = load_datalist(out, require_mos=False)
    test = load_datalist(out, key="test")
    assert len(train) == 27 and len(test) == 9
    assert {it["domain"] for it in train + test} == {"target"}
    assert {it["group"] for it in train}.isdisjoint({it["group"] for it in test})
    assert sum(it["labelled"] for it in train) == round(0.25 * 27)
    raw = json.loads(out.read_text())["training"]
    assert sum(r["mos"] is None for r in raw) == 27 - round(0.25 * 27)


def test_md72_without_header_and_errors(tmp_path):
    for i in range(10):
        _touch(tmp_path / "img" / f"{i}.png")
    (tmp_path / "scores.csv").write_text("\n".join(f"{i}.png,{i / 2}" for i in range(10)) + "\n")
    out = convert_md72(tmp_path / "scores.csv", tmp_path / "dl.json", image_root=tmp_path / "img", test_fraction=0.3)
    assert len(load_datalist(out)) == 7 and len(load_datalist(out, key="test")) == 3
    (tmp_path / "bad.csv").write_text("path,mos\n0.png,3.1\n1.png,\n")
    with pytest.raises(ConversionError, match=r"bad.csv:3: MOS missing or not a number"):
        convert_md72(tmp_path / "bad.csv", tmp_path / "dl.json", image_root=tmp_path / "img")
    (tmp_path / "miss.csv").write_text("path,mos\nnothere.png,3.1\n")
    with pytest.raises(ConversionError, match="nothere.png"):
        convert_md72(tmp_path / "miss.csv", tmp_path / "dl.json")


# ----------------------------------------------------------------------------------------------- MKCNet


def test_read_mkcnet_split_header_optional_and_bad_rows(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text(HEADER + "Images/a.png,3,1\n\n  Images/b.png , 0 , 2 ,extra\n")
    assert [(r["image"], r["diagnosis"], r["quality"]) for r in read_mkcnet_split(f)] == [
        ("Images/a.png", 3, 1),
        ("Images/b.png", 0, 2),
    ]
    f.write_text("Images/a.png,3,1\n")
    assert len(read_mkcnet_split(f)) == 1
    f.write_text(HEADER + "Images/a.png,3,1\nImages/b.png,x,1\n")
    with pytest.raises(ConversionError, match=r"train.txt:3"):
        read_mkcnet_split(f)


def test_eyeq_split_files_remap_dr(tmp_path):
    grades = [(g, q) for g in range(5) for q in range(3)]
    _split_dataset(tmp_path, "EYEQ", {"train": grades, "val": grades[:3], "test": grades[3:6]})
    out = convert_eyeq(tmp_path, tmp_path / "eyeq.json")
    remap = {0: 0, 1: 1, 2: 1, 3: 1, 4: 2}
    assert _labels(out, "training") == [(remap[g], q) for g, q in grades]  # quality unchanged in split files
    assert len(_labels(out, "validation")) == 3 and len(_labels(out, "test")) == 3


def test_eyeq_official_csv_reverses_quality(tmp_path):
    rows = [("10_left.jpeg", 0, 0), ("10_right.jpeg", 1, 4), ("13_left.jpeg", 2, 2)]
    (tmp_path / "data").mkdir()
    for csv_name, sub in (("Label_EyeQ_train.csv", "train"), ("Label_EyeQ_test.csv", "test")):
        text = ",image,quality,DR_grade\n" + "".join(f"{i},{n},{q},{d}\n" for i, (n, q, d) in enumerate(rows))
        (tmp_path / "data" / csv_name).write_text(text)
        for n, _, _ in rows:
            _touch(tmp_path / "images" / sub / n.replace(".jpeg", ".png"))  # EyeQ crops are written as .png
    out = convert_eyeq(tmp_path, tmp_path / "eyeq.json", image_root=tmp_path / "images", val_fraction=0.0)
    # EyeQ 0 Good / 1 Usable / 2 Reject -> MKCNet 0 Reject / 1 Usable / 2 Good; DR 4 -> 2, 2 -> 1
    assert _labels(out, "training") == [(0, 2), (2, 1), (1, 0)]
    test = load_datalist(out, key="test", task="iqad")
    assert all("/test/" in it["image"].replace("\\", "/") and it["image"].endswith(".png") for it in test)


def test_deepdrid_csv_per_eye_columns(tmp_path):
    base = tmp_path / "regular_fundus_images"
    for split in ("training", "validation"):
        folder = base / f"regular-fundus-{split}"
        lines = [
            "patient_id,image_id,image_path,left_eye_DR_Level,right_eye_DR_Level,patient_DR_Level,"
            "Overall quality,Clarity,Field definition,Artifact"
        ]
        for pid in (1, 2):
            for eye, grades in (("l", (0, "")), ("r", ("", 4))):
                for k in (1, 2):
                    iid = f"{pid}_{eye}{k}"
                    _touch(folder / "Images" / str(pid) / f"{iid}.jpg")
                    lv, rv = grades
                    lines.append(f"{pid},{iid},\\regular-fundus-{split}\\{pid}\\{iid}.jpg,{lv},{rv},4,{k - 1},8,10,10")
        (folder / f"regular-fundus-{split}.csv").write_text("\n".join(lines) + "\n")
    out = convert_deepdr(tmp_path, tmp_path / "deepdr.json")
    train = load_datalist(out, task="iqad", num_diagnosis=3, num_quality=2)
    assert len(train) == 8 and len(load_datalist(out, key="validation", task="iqad")) == 8
    by_name = {Path(it["image"]).stem: (it["diagnosis"], it["quality"]) for it in train}
    assert by_name["1_l1"] == (0, 0) and by_name["2_r2"] == (2, 1)  # right eye DR 4 -> PDR


def test_deepdr_split_files_and_missing_image(tmp_path):
    ds = _split_dataset(tmp_path, "DEEPDR", {"train": [(3, 0), (4, 1)], "val": [(0, 0)], "test": [(2, 1)]})
    out = convert_deepdr(tmp_path, tmp_path / "d.json")
    assert _labels(out, "training") == [(1, 0), (2, 1)]
    (ds / "Images" / "test_0.png").unlink()
    with pytest.raises(ConversionError, match=r"test_0.png") as err:
        convert_deepdr(tmp_path, tmp_path / "d.json")
    assert "test.txt" in str(err.value)


def test_drac_train_only_gets_holdout_or_user_test_file(tmp_path):
    ds = _split_dataset(tmp_path, "DRAC", {"train": [(i % 3, i % 2) for i in range(20)]})
    out = convert_drac(tmp_path, tmp_path / "drac.json", holdout_fraction=0.25, seed=0)
    train, test = _labels(out, "training"), load_datalist(out, key="test", task="iqad")
    assert len(train) == 15 and len(test) == 5
    assert [it["image"] for it in load_datalist(out, key="validation", task="iqad")] == [it["image"] for it in test]
    _touch(ds / "Images" / "t0.png")
    (tmp_path / "my_test.txt").write_text(HEADER + "Images/t0.png,2,1\n")
    out = convert_drac(tmp_path, tmp_path / "drac2.json", test_file=tmp_path / "my_test.txt")
    assert _labels(out, "test") == [(2, 1)] and len(_labels(out, "training")) == 20
    with pytest.raises(ConversionError, match="no test split"):
        convert_drac(tmp_path, tmp_path / "drac3.json", holdout_fraction=0.0)


@pytest.mark.parametrize(
    ("fn", "folder"),
    [
        (convert_iqad_ct, "IQAD-CT"),
        (convert_iqad_ct, "IQAD_CT"),
        (convert_iqad_cxr, "IQAD-CXR"),
        (convert_iqad_cxr, "IQAD_CXR"),
    ],
)
def test_iqad_hyphen_and_underscore_folders(tmp_path, fn, folder):
    _split_dataset(tmp_path, folder, {"train": [(1, 0), (0, 1)], "val": [(0, 0)], "test": [(1, 1)]}, header=False)
    out = fn(tmp_path, tmp_path / "dl.json")
    assert _labels(out, "training") == [(1, 0), (0, 1)] and _labels(out, "test") == [(1, 1)]
    assert json.loads(out.read_text())["training"][0]["image"] == f"{folder}/Images/train_0.png"


def test_iqad_ct_label_out_of_range_names_line(tmp_path):
    _split_dataset(tmp_path, "IQAD_CT", {"train": [(1, 0), (0, 2)], "test": [(1, 1)]})
    with pytest.raises(ConversionError, match=r"train.txt:3: quality 2 out of range 0..1"):
        convert_iqad_ct(tmp_path, tmp_path / "dl.json")


def test_cli_main_and_module_entry_point(tmp_path, capsys):
    _fake_tid2013(tmp_path / "tid")
    assert converters_main(["tid2013", "--root", str(tmp_path / "tid"), "--out", str(tmp_path / "t.json")]) == 0
    assert len(load_datalist(tmp_path / "t.json")) == 100
    assert converters_main(["iqad_ct", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")]) == 2
    assert "dataset root folder not found" in capsys.readouterr().err
    _split_dataset(tmp_path / "mk", "IQAD-CXR", {"train": [(1, 2)], "val": [(0, 0)], "test": [(1, 1)]})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai_iqad.data.converters",
            "iqad_cxr",
            "--root",
            str(tmp_path / "mk"),
            "--out",
            str(tmp_path / "cxr.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _labels(tmp_path / "cxr.json", "training") == [(1, 2)]
