"""load_datalist / write_datalist / split_items: validation errors name the file, key, item and image."""

from __future__ import annotations

import json
import math
import os

import pytest

from monai_iqad.data import DatalistError, load_datalist, split_items, write_datalist


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(b"x")
    return folder


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def test_relative_paths_resolved_against_datalist_folder_and_base_dir(tmp_path, images):
    path = _write(tmp_path / "dl.json", {"training": [{"image": "imgs/a.png", "mos": 3.5, "domain": "source"}]})
    (item,) = load_datalist(path)
    assert item["image"] == os.path.join(str(tmp_path), "imgs", "a.png")
    assert item["mos"] == 3.5 and item["labelled"] == 1 and item["domain"] == "source"
    other = tmp_path / "lists"
    other.mkdir()
    path2 = _write(other / "dl.json", {"training": [{"image": "a.png", "mos": 1}]})
    (item,) = load_datalist(path2, base_dir=images)
    assert item["image"] == str(images / "a.png") and item["domain"] == "source"


def test_write_then_load_roundtrip_relative_and_atomic(tmp_path, images):
    out = tmp_path / "out" / "datalist.json"
    sections = {
        "name": "demo",
        "training": [{"image": str(images / "a.png"), "mos": 2.0, "domain": "source"}],
        "test": [{"image": str(images / "b.png"), "mos": float("nan"), "domain": "target"}],
    }
    assert write_datalist(out, sections) == out
    raw = json.loads(out.read_text())
    assert raw["name"] == "demo" and raw["training"][0]["image"] == "../imgs/a.png"
    assert raw["test"][0]["mos"] is None  # NaN written as null (valid JSON)
    assert sorted(p.name for p in out.parent.iterdir()) == ["datalist.json"]  # no temp file left
    (item,) = load_datalist(out, key="test", require_mos=False)
    assert item["image"] == str(images / "b.png") and math.isnan(item["mos"]) and item["labelled"] == 0


def test_unlabelled_targets_and_require_mos_source(tmp_path, images):
    items = [
        {"image": "imgs/a.png", "mos": 4.0, "domain": "source"},
        {"image": "imgs/b.png", "mos": None, "domain": "target"},
        {"image": "imgs/c.png", "domain": "target"},
    ]
    path = _write(tmp_path / "dl.json", {"training": items})
    out = load_datalist(path, require_mos="source")
    assert [it["labelled"] for it in out] == [1, 0, 0] and math.isnan(out[2]["mos"])
    with pytest.raises(DatalistError, match="'mos' is missing"):
        load_datalist(path, require_mos=True)
    items[0]["mos"] = None
    path = _write(tmp_path / "dl.json", {"training": items})
    with pytest.raises(DatalistError, match=r"item 0 \(image 'imgs/a.png'\).*'mos' is missing"):
        load_datalist(path, require_mos="source")
    assert len(load_datalist(path, require_mos=False)) == 3


def test_domain_filter_and_empty_domain(tmp_path, images):
    path = _write(
        tmp_path / "dl.json",
        {"training": [{"image": "imgs/a.png", "mos": 1.0, "domain": "source"}, {"image": "imgs/b.png", "mos": 2.0}]},
    )
    assert len(load_datalist(path, domain="source")) == 2  # a missing domain counts as source
    with pytest.raises(DatalistError, match="no item of domain 'target'") as err:
        load_datalist(path, domain="target")
    assert str(path) in str(err.value) and "'training'" in str(err.value)


@pytest.mark.parametrize(
    ("item", "kwargs", "message"),
    [
        ({"image": "imgs/missing.png", "mos": 1.0}, {}, "image file not found"),
        ({"mos": 1.0}, {}, "'image' is missing"),
        ({"image": "imgs/b.png"}, {}, "'mos' is missing"),
        ({"image": "imgs/b.png", "mos": "high"}, {}, "'mos' is not a number"),
        ({"image": "imgs/b.png", "mos": float("nan")}, {}, "'mos' must be a finite number"),
        ({"image": "imgs/b.png", "mos": True}, {}, "'mos' is not a number"),
        ({"image": "imgs/b.png", "mos": 1.0, "domain": "other"}, {}, "domain must be one of"),
        ({"image": "imgs/b.png", "mos": 1.0, "frame": -1}, {}, "'frame' must be a non-negative integer"),
        ({"image": "imgs/b.png", "quality": 1}, {"task": "iqad"}, "'diagnosis' label is missing"),
        ({"image": "imgs/b.png", "diagnosis": 1.5, "quality": 1}, {"task": "iqad"}, "must be an integer"),
        ({"image": "imgs/b.png", "diagnosis": "1", "quality": 1}, {"task": "iqad"}, "must be an integer"),
        (
            {"image": "imgs/b.png", "diagnosis": 1, "quality": 3},
            {"task": "iqad", "num_diagnosis": 3, "num_quality": 3},
            r"'quality' label 3 out of range \[0, 2\]",
        ),
        ({"image": "imgs/b.png", "diagnosis": -1, "quality": 0}, {"task": "iqad"}, "out of range"),
    ],
)
def test_item_errors_name_file_key_index_and_image(tmp_path, images, item, kwargs, message):
    good = {"image": "imgs/a.png", "mos": 1.0, "diagnosis": 0, "quality": 0}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"validation": [good, item]}))  # json writes NaN as the NaN literal
    with pytest.raises(DatalistError, match=message) as err:
        load_datalist(path, key="validation", **kwargs)
    text = str(err.value)
    assert str(path) in text and "'validation'" in text and "item 1" in text
    if "image" in item:
        assert item["image"] in text


def test_file_level_errors(tmp_path, images):
    with pytest.raises(DatalistError, match="datalist file not found"):
        load_datalist(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatalistError, match="not valid JSON"):
        load_datalist(bad)
    path = _write(tmp_path / "dl.json", {"training": [], "validation": [{"image": "imgs/a.png", "mos": 1}]})
    with pytest.raises(DatalistError, match="section is empty") as err:
        load_datalist(path)
    assert str(path) in str(err.value)
    with pytest.raises(DatalistError, match=r"key not found.*sections: \['training', 'validation'\]"):
        load_datalist(path, key="test")
    assert load_datalist(path, key="validation", check_files=False)[0]["labelled"] == 1


def test_iqad_items_cast_to_int(tmp_path, images):
    path = _write(tmp_path / "dl.json", {"training": [{"image": "imgs/a.png", "diagnosis": 2.0, "quality": 1}]})
    (item,) = load_datalist(path, task="iqad", num_diagnosis=3, num_quality=2)
    assert item["diagnosis"] == 2 and isinstance(item["diagnosis"], int)


def test_split_items_deterministic_and_grouped():
    items = [{"ref": f"r{i // 5}", "i": i} for i in range(50)]  # 10 groups of 5
    a = split_items(items, (0.6, 0.2, 0.2), seed=3, group="ref")
    b = split_items(items, (0.6, 0.2, 0.2), seed=3, group="ref")
    assert a == b and [len(p) for p in a] == [30, 10, 10]
    groups = [{it["ref"] for it in part} for part in a]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert split_items(items, (0.6, 0.2, 0.2), seed=4, group="ref") != a
    assert [len(p) for p in split_items(list(range(7)), (0.5, 0.5))] == [4, 3]
    with pytest.raises(ValueError, match="fractions"):
        split_items(items, (0, 0))
