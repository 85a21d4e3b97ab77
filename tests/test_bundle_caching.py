"""Caching that scales: every ``CacheDataset`` of a bundle's ``train.json`` is driven by the ``cache_rate``,
``cache_num_workers`` and ``cache_progress`` ids, and the ``configs/persistent_cache.json`` overlay (for data sets
that do not fit in memory) swaps each of them for a ``PersistentDataset`` that writes its items to ``cache_dir``."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from bundle_testing import (  # noqa: F401  (one_thread: fixture)
    bundle_dir,
    bundle_kind,
    bundle_names,
    copy_bundle,
    demo_dataset_dir,
    one_thread,
    read_json,
)

BUNDLES = bundle_names()
pytestmark = pytest.mark.skipif(not BUNDLES, reason="no bundle folders in bundles/")
CACHE_KEYS = ("cache_rate", "num_workers", "progress")


def _cache_datasets(node: Any, path: str = "") -> dict[str, dict]:
    """``{config id: definition}`` of every ``CacheDataset`` component in a parsed JSON config."""
    found: dict[str, dict] = {}
    if isinstance(node, dict):
        if node.get("_target_") in ("CacheDataset", "monai.data.CacheDataset"):
            found[path] = node
        for key, value in node.items():
            found.update(_cache_datasets(value, f"{path}#{key}" if path else key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.update(_cache_datasets(value, f"{path}#{i}"))
    return found


def _value(config: dict, value: Any) -> Any:
    """A literal, or the top-level id an ``@id`` reference points to."""
    return config.get(value[1:]) if isinstance(value, str) and value.startswith("@") else value


@pytest.mark.parametrize("name", BUNDLES)
def test_cache_settings_are_config_ids(name):
    """Each ``CacheDataset`` spells out ``cache_rate``, ``num_workers`` and ``progress`` (literals are ids too:
    ``--train#dataset#cache_rate 0.2``), the progress bar follows the console (on in a terminal, off in logs and
    on other ranks), and the overlay swaps every one of them."""
    train = read_json(bundle_dir(name) / "configs" / "train.json")
    datasets = _cache_datasets(train)
    assert datasets, f"{name}: train.json has no CacheDataset"
    for where, ds in datasets.items():
        missing = [k for k in CACHE_KEYS if k not in ds]
        assert not missing, f"{name}: {where} lacks {missing} (MONAI's defaults: all, 1 worker, silent)"
        progress = _value(train, ds["progress"])
        assert progress == "$monai_iqad.utils.console_is_interactive()", f"{name}: {where} progress {progress!r}"
        rate = _value(train, ds["cache_rate"])
        assert isinstance(rate, (int, float)) and 0 <= rate <= 1, f"{name}: {where} cache_rate {rate!r}"
    overlay = bundle_dir(name) / "configs" / "persistent_cache.json"
    assert overlay.is_file(), f"{name}: configs/persistent_cache.json (PersistentDataset for data beyond memory)"
    swapped = {k for k, v in read_json(overlay).items() if isinstance(v, dict) and "PersistentDataset" in v["_target_"]}
    assert swapped == set(datasets), f"{name}: overlay swaps {sorted(swapped)}, train.json caches {sorted(datasets)}"


def _overlay_bundles() -> list[str]:
    """Every bundle but only one MKCNet bundle (they are rendered from one template; the static test checks all)."""
    mkcnet = [n for n in BUNDLES if bundle_kind(n) == "mkcnet"]
    return [n for n in BUNDLES if n not in mkcnet] + mkcnet[:1]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", _overlay_bundles())
def test_persistent_cache_overlay_writes_to_cache_dir(name, tmp_path):
    """With the overlay, the data sets are ``PersistentDataset``: reading an item writes one file in its folder."""
    if not (bundle_dir(name) / "configs" / "persistent_cache.json").is_file():
        pytest.fail(f"{name}: no configs/persistent_cache.json")
    from monai.bundle import ConfigWorkflow
    from monai.data import PersistentDataset

    bundle = copy_bundle(name, tmp_path / name)
    cache = tmp_path / "cache"
    workflow = ConfigWorkflow(
        config_file=[str(bundle / "configs" / c) for c in ("train.json", "persistent_cache.json")],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        bundle_root=str(bundle),
        dataset_dir=str(demo_dataset_dir(name)),
        build_demo_data=False,
        cache_dir=str(cache),
        num_workers=0,
    )
    workflow.initialize()
    ids = [k for k, v in read_json(bundle / "configs" / "persistent_cache.json").items() if isinstance(v, dict)]
    for key in ids:
        ds = workflow.parser.get_parsed_content(key)
        assert isinstance(ds, PersistentDataset), f"{key} is {type(ds).__name__}"
        before = set(cache.rglob("*.pt"))
        ds[0]
        written = set(cache.rglob("*.pt")) - before
        assert len(written) == 1 and all(str(cache) in str(p) for p in written), f"{key}: wrote {written}"
    assert workflow.check_properties() == []


def test_console_is_interactive_follows_stderr(monkeypatch):
    """Progress bars only on a terminal: a pipe or log file turns them off."""
    from monai_iqad.utils import console_is_interactive

    class _Stream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self._tty = tty

        def isatty(self) -> bool:
            return self._tty

    monkeypatch.setattr(sys, "stderr", _Stream(True))
    assert console_is_interactive() is True
    monkeypatch.setattr(sys, "stderr", _Stream(False))
    assert console_is_interactive() is False
