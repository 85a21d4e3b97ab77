"""The model zoo's ``ci/verify_bundle.py -m full`` steps, offline, on every bundle placed in a model-zoo-like tree.

Project-MONAI/model-zoo verifies a bundle ``<zoo>/models/<name>`` in this order (read from its ``ci/verify_bundle.py``
and ``ci/utils.py``; re-implemented here, not copied):

1. the entries of ``large_files.yml`` are downloaded with MONAI's ``download_url`` (a file that already exists is
   only checked against ``hash_val``); an entry with an empty ``url`` for a missing file fails the whole bundle;
2. ``configs/metadata.json`` and ``LICENSE`` must exist, and the *preferred* files ``models/model.pt`` and
   ``configs/inference.(json|yaml|yml)``;
3. ``version`` is a key of ``changelog`` (and not yet in ``models/model_info.json``);
4. ``verify_metadata`` against the schema placed at ``<bundle>/eval/schema.json``;
5. (full mode) the inference workflow's properties, only when the metadata's ``supported_apps`` names an app
   folder of the zoo that holds a ``bundle_properties.py`` (none does for ``monai-label``, so nothing is checked;
   MONAI's infer and meta properties are checked with a data set by ``test_bundle_conformance``);
6. (full mode) ``verify_net_in_out`` on ``network_def`` of the inference config, with ``bundle_root`` overridden;
7. (full mode) ``ckpt_export`` of ``models/model.pt`` to ``models/verify_model.ts``; a shipped ``models/model.ts``
   must load with ``torch.jit.load``.

Offline differences: step 1 never downloads (an entry whose file is absent must at least have an http(s) ``url`` and
a hash); step 4 uses the vendored schema and is skipped when it is absent (``test_bundle_conformance`` checks the
schema's fields then). Bundles without published weights have no ``models/model.pt`` in a clean clone, so the zoo
would stop at step 2: ``test_preferred_files_in_a_clean_clone`` records which bundles ship weights, and the full run
gives the others a freshly initialised ``model.pt`` (as the zoo's own ``_produce_fake_weights`` helper does).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from bundle_testing import (  # noqa: F401  (one_thread: fixture)
    SCHEMA_MD5,
    SHARED_SCHEMA,
    bundle_dir,
    bundle_names,
    copy_bundle,
    one_thread,
    read_json,
)

BUNDLES = bundle_names()
pytestmark = pytest.mark.skipif(not BUNDLES, reason="no bundle folders in bundles/")
HASHES = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def _large_files(bundle: Path) -> list[dict]:
    """Entries of ``large_files.(yml|yaml|json)``, parsed like the zoo does (MONAI ``ConfigParser``, PyYAML)."""
    from monai.bundle import ConfigParser

    files = [p for p in bundle.glob("large_files.*") if p.suffix in (".yml", ".yaml", ".json")]
    if not files:
        return []
    assert len(files) == 1, f"{bundle.name}: several large_files files {files}"
    parser = ConfigParser()
    parser.read_config(str(files[0]))
    entries = parser.get()["large_files"]
    assert isinstance(entries, list) and entries, f"{files[0]}: 'large_files' must be a non-empty list (else no file)"
    return entries


def _shipped_weights(name: str) -> bool:
    return (bundle_dir(name) / "models" / "model.pt").is_file() and any(
        e.get("path") == "models/model.pt" for e in _large_files(bundle_dir(name))
    )


@pytest.mark.parametrize("name", BUNDLES)
def test_large_files_entries_are_fetchable(name):
    """Every entry has a relative path, an http(s) url and a hash; a file present in the bundle matches its hash.

    MONAI's ``download_url`` (the zoo's step 1 and ``python -m monai.bundle download_large_files``) skips existing
    files after this hash check, so the check below is exactly what runs offline.
    """
    from monai.apps.utils import check_hash

    root = bundle_dir(name)
    for entry in _large_files(root):
        where = f"{name}/large_files.yml entry {entry.get('path')!r}"
        assert set(entry) >= {"path", "url", "hash_val", "hash_type"}, f"{where}: needs path, url, hash_val, hash_type"
        assert str(entry["url"]).startswith(("https://", "http://")), f"{where}: url {entry['url']!r} cannot be fetched"
        assert entry["hash_type"] in HASHES and entry["hash_val"], f"{where}: hash_type/hash_val missing"
        assert not Path(entry["path"]).is_absolute() and ".." not in Path(entry["path"]).parts, where
        target = root / entry["path"]
        if target.is_file():
            assert check_hash(str(target), entry["hash_val"], entry["hash_type"]), f"{where}: hash does not match"


@pytest.mark.parametrize("name", BUNDLES)
def test_preferred_files_in_a_clean_clone(name):
    """``models/model.pt`` is shipped (and listed with its hash) or the README says how it is produced."""
    readme = (bundle_dir(name) / "docs" / "README.md").read_text(encoding="utf-8")
    if not _shipped_weights(name):
        assert "models/model.pt" in readme, f"{name}: no weights shipped and the README does not say how to get them"


def _verify_full(zoo: Path, name: str) -> list[str]:
    """Run the zoo's ``verify(name, models_path, mode="full")`` steps offline; returns the steps that ran."""
    from monai.apps.utils import download_url
    from monai.bundle import ckpt_export, verify_metadata, verify_net_in_out

    models = zoo / "models"
    bundle = models / name
    steps = []
    for entry in _large_files(bundle):  # 1. (existing files: hash check only, no network)
        target = bundle / entry["path"]
        assert target.is_file(), f"{name}: {entry['path']} would be downloaded from {entry['url']} (offline here)"
        download_url(url=entry["url"], filepath=str(target), hash_val=entry["hash_val"], hash_type=entry["hash_type"])
        steps.append("large_files")
    for required in ("configs/metadata.json", "LICENSE", "models/model.pt"):  # 2.
        assert (bundle / required).is_file(), f"{name}: necessary file {required} is not existing"
    inference = [p for p in (bundle / "configs").glob("inference.*") if p.suffix in (".json", ".yaml", ".yml")]
    assert inference, f"{name}: inference config file is not existing"
    meta_file = bundle / "configs" / "metadata.json"
    meta = read_json(meta_file)  # 3.
    assert meta["version"] in meta["changelog"], f"{name}: version {meta['version']} missing in changelog"
    model_info = read_json(models / "model_info.json")
    assert f"{name}_v{meta['version']}" not in model_info
    if SHARED_SCHEMA.is_file():  # 4.
        (bundle / "eval").mkdir(exist_ok=True)
        shutil.copy(SHARED_SCHEMA, bundle / "eval" / "schema.json")
        verify_metadata(meta_file=str(meta_file), filepath=str(bundle / "eval" / "schema.json"), hash_val=SCHEMA_MD5)
        steps.append("metadata")
    config = str(inference[0])
    # 5. the zoo looks for <zoo>/<app>/**/bundle_properties.py of each supported app; there is none for monai-label,
    # so the zoo checks nothing here. MONAI's infer + meta properties (with a data set) are checked by
    # test_bundle_conformance.test_bundle_properties.
    apps = meta.get("supported_apps", {})
    props = [p for app in apps for p in (zoo / app).rglob("bundle_properties.py")] if apps else []
    assert not props, "a zoo checkout with app property files: run the real verify_bundle.py"
    steps.append("properties")
    verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=config, bundle_root=str(bundle))  # 6.
    steps.append("net_in_out")
    ckpt_export(  # 7.
        net_id="network_def",
        filepath=str(bundle / "models" / "verify_model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(meta_file),
        config_file=config,
        bundle_root=str(bundle),
    )
    torch.jit.load(str(bundle / "models" / "verify_model.ts"))
    if (bundle / "models" / "model.ts").is_file():
        torch.jit.load(str(bundle / "models" / "model.ts"))
    steps.append("torchscript")
    return steps


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", BUNDLES)
def test_model_zoo_verify_full_offline(name, tmp_path):
    """The bundle as committed (plus its shipped weights), in ``<zoo>/models/<name>``, passes every step."""
    from monai.bundle import ConfigParser

    zoo = tmp_path / "model-zoo"
    (zoo / "models").mkdir(parents=True)
    (zoo / "models" / "model_info.json").write_text("{}", encoding="utf-8")
    bundle = copy_bundle(name, zoo / "models" / name)
    src_weights = bundle_dir(name) / "models" / "model.pt"
    if _shipped_weights(name):
        shutil.copy(src_weights, bundle / "models" / "model.pt")
    else:  # no published weights: a freshly initialised state dict, like the zoo's _produce_fake_weights
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "inference.json"))
        parser.read_meta(str(bundle / "configs" / "metadata.json"))
        parser["bundle_root"] = str(bundle)
        torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    steps = _verify_full(zoo, name)
    assert steps[-3:] == ["properties", "net_in_out", "torchscript"]
    assert ("large_files" in steps) == _shipped_weights(name)
