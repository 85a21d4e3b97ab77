"""MONAI Label train task: fine-tune a local bundle on the labels stored in the datastore (needs ``monailabel``).

MONAI Label's ``BundleTrainTask`` only knows image/label-mask pairs and its own config overrides; this task reads
MOS or diagnosis + quality-grade labels from the datastore (:mod:`monai_iqad.label.labels`), writes a datalist, and
runs the bundle's own ``configs/train.json`` (:func:`monai_iqad.label.finetune.run_bundle_training`). MONAI Label
runs train requests in a subprocess, so training does not block the server.

Request parameters (``POST /train/{model}`` JSON body; all optional):

- ``max_epochs`` (int ≥ 1, default: the bundle's), ``val_split`` (``[0, 1)``, default 0.2), ``seed`` (split seed);
- ``pretrained`` (default true: start from the bundle's ``models/model.pt`` when present), ``publish`` (default
  true: replace ``models/model.pt`` at the end);
- ``device`` (``"cpu"``, ``"cuda"``...), ``learning_rate``, ``batch_size``, ``num_workers``;
- ``images``: list of datastore ids to use (default: all labelled images);
- ``mos_range`` (SAQM): ``[low, high]`` of the MOS scale (default: ``[0, 1]`` when every MOS fits, else the rounded
  min/max); ``skip_invalid`` (default false: invalid labels fail the request).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from .bundles import BundleSpec, mkcnet_class_names, read_bundle_config
from .finetune import run_bundle_training
from .labels import build_datalist
from .safety import (
    InvalidParameterError,
    check_fraction,
    check_mos_range,
    check_positive_int,
    validate_image_id,
)
from .settings import check_bool

__all__ = ["BundleFineTuneTask", "datastore_records", "parse_train_request"]

logger = logging.getLogger(__name__)


def parse_train_request(request: dict[str, Any], kind: str) -> dict[str, Any]:
    """Typed, validated train options from a request (unknown keys are ignored; config expressions are never
    accepted, only numbers, booleans and ids).

    Raises:
        InvalidParameterError: a value of the wrong type or out of range.
    """
    out: dict[str, Any] = {
        "max_epochs": None,
        "val_split": 0.2,
        "seed": 0,
        "pretrained": True,
        "publish": True,
        "device": None,
        "images": None,
        "mos_range": None,
        "skip_invalid": False,
        "overrides": {},
    }
    if request.get("max_epochs") is not None:
        out["max_epochs"] = check_positive_int(request["max_epochs"], "max_epochs")
    if request.get("val_split") is not None:
        out["val_split"] = check_fraction(request["val_split"], "val_split")
    if request.get("seed") is not None:
        out["seed"] = check_positive_int(request["seed"], "seed", minimum=0)
    for key in ("pretrained", "publish", "skip_invalid"):
        if request.get(key) is not None:
            out[key] = check_bool(request[key], key)
    device = request.get("device")
    if isinstance(device, (list, tuple)):
        device = device[0] if device else None
    if device is not None:
        if not isinstance(device, str) or not device.replace(":", "").replace("_", "").isalnum():
            raise InvalidParameterError(f"'device' must be a device name such as 'cpu' or 'cuda:0', got {device!r}")
        out["device"] = device
    images = request.get("images")
    if images is not None:
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list):
            raise InvalidParameterError("'images' must be a list of datastore ids")
        out["images"] = [validate_image_id(i) for i in images]
    if request.get("mos_range") is not None:
        if kind != "saqm":
            raise InvalidParameterError("'mos_range' only applies to SAQM bundles")
        out["mos_range"] = list(check_mos_range(request["mos_range"]))
    if request.get("learning_rate") is not None:
        lr = check_fraction(request["learning_rate"], "learning_rate", 0.0, 10.0)
        if lr <= 0:
            raise InvalidParameterError(f"'learning_rate' must be positive, got {request['learning_rate']!r}")
        out["overrides"]["learning_rate"] = lr
    if request.get("batch_size") is not None:
        out["overrides"]["batch_size"] = check_positive_int(request["batch_size"], "batch_size")
    if request.get("num_workers") is not None:
        out["overrides"]["num_workers"] = check_positive_int(request["num_workers"], "num_workers", minimum=0)
    return out


def datastore_records(datastore: Datastore, image_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``{"id", "image", "info", "label_json"}`` for the datastore's images (or ``image_ids``).

    ``label_json`` is the content of the image's ``final`` label when that label is a ``.json`` file.
    """
    ids = list(image_ids) if image_ids is not None else list(datastore.list_images())
    records = []
    for image_id in ids:
        path = datastore.get_image_uri(image_id)
        if not path or not os.path.isfile(path):
            raise InvalidParameterError(f"image id {image_id!r} is not in the studies datastore")
        info = datastore.get_image_info(image_id) or {}
        label_json = None
        label_id = datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL.value)
        if label_id:
            uri = datastore.get_label_uri(label_id, DefaultLabelTag.FINAL.value)
            if uri and uri.endswith(".json") and os.path.isfile(uri):
                try:
                    with open(uri, encoding="utf-8") as f:
                        label_json = json.load(f)
                except (OSError, ValueError) as e:
                    raise InvalidParameterError(f"label JSON of image {image_id!r} is not valid JSON ({e})") from e
        records.append({"id": image_id, "image": path, "info": info, "label_json": label_json})
    return records


class BundleFineTuneTask(TrainTask):
    """Fine-tune one bundle from the datastore's labels with the bundle's own ``configs/train.json``.

    Args:
        spec: the bundle.
        overlays: config file names in the bundle's ``configs/`` merged over ``train.json`` (e.g. ``demo.json``).
        work_root: runs go to ``work_root/<bundle>/<timestamp>/`` (datalist, checkpoints, TensorBoard logs).
    """

    def __init__(self, spec: BundleSpec, overlays: Sequence[str], work_root: str | os.PathLike) -> None:
        self.spec = spec
        self.overlays = list(overlays)
        self.work_root = Path(work_root) / spec.name
        kind = "MOS" if spec.kind == "saqm" else "diagnosis + quality grade"
        super().__init__(f"fine-tune '{spec.name}' on the datastore's {kind} labels (image info or label JSON)")
        try:
            parser = read_bundle_config(spec, "train", self.overlays)
            self.default_epochs: int | None = int(parser.get_parsed_content("max_epochs"))
        except Exception:  # shown as "bundle default" in /info/
            self.default_epochs = None

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "max_epochs": self.default_epochs,
            "val_split": 0.2,
            "pretrained": True,
            "publish": True,
        }
        if self.spec.kind == "saqm":
            out["mos_range"] = None
        return out

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["bundle"] = {"name": self.spec.name, "kind": self.spec.kind, "path": str(self.spec.path)}
        out["labels"] = ["mos"] if self.spec.kind == "saqm" else ["diagnosis", "quality"]
        return out

    def stats(self) -> dict[str, Any]:
        latest = self.work_root / "latest.json"
        try:
            return json.loads(latest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def __call__(self, request, datastore: Datastore):
        options = parse_train_request(dict(request), self.spec.kind)
        records = datastore_records(datastore, options["images"])
        names: dict[str, Any] = {}
        if self.spec.kind == "mkcnet":
            nd, nq, d_names, q_names = mkcnet_class_names(self.spec)
            names = {"num_diagnosis": nd, "num_quality": nq, "diagnosis_names": d_names, "quality_names": q_names}
        datalist = build_datalist(
            records,
            self.spec.name,
            self.spec.kind,
            val_split=options["val_split"],
            seed=options["seed"],
            mos_range=options["mos_range"],
            skip_invalid=options["skip_invalid"],
            **names,
        )
        run_dir = self.work_root / time.strftime("%Y%m%d_%H%M%S")
        suffix = 1
        while run_dir.exists():
            run_dir = self.work_root / f"{time.strftime('%Y%m%d_%H%M%S')}_{suffix}"
            suffix += 1
        summary = run_bundle_training(
            self.spec,
            datalist,
            run_dir,
            overlays=self.overlays,
            max_epochs=options["max_epochs"],
            pretrained=options["pretrained"],
            device=options["device"],
            publish=options["publish"],
            extra_overrides=options["overrides"],
        )
        summary["skipped_invalid"] = datalist.get("skipped", {})
        summary["unlabelled"] = datalist.get("unlabelled", 0)
        (self.work_root / "latest.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        logger.info("fine-tuned %s: %s", self.spec.name, summary)
        return summary
