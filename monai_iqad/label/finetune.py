"""Fine-tune a bundle on a datalist written from the datastore, with the bundle's own ``configs/train.json``
(pure: MONAI bundle workflow, no ``monailabel``).

The run happens in a work folder (datalist, checkpoints, TensorBoard logs); the bundle folder is only touched at the
end, when the new ``model.pt`` is published into ``<bundle>/models/`` (atomically; the previous one is kept as
``model.previous.pt``). MLflow tracking is never enabled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_iqad.data import write_datalist
from monai_iqad.utils import atomic_torch_save, atomic_write, atomic_write_json

from .bundles import BundleSpec, read_bundle_config

__all__ = ["TrainingError", "run_bundle_training"]

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The bundle workflow failed or produced no model."""


def _copy_atomic(src: Path, dst: Path) -> None:
    with open(src, "rb") as f:
        data = f.read()
    atomic_write(dst, lambda out: out.write(data))


def run_bundle_training(
    spec: BundleSpec,
    datalist: Mapping[str, Any],
    work_dir: str | os.PathLike,
    overlays: Sequence[str] = (),
    max_epochs: int | None = None,
    pretrained: bool = True,
    device: str | torch.device | None = None,
    val_interval: int | None = None,
    publish: bool = True,
    extra_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``configs/train.json`` (plus ``overlays``) of ``spec`` on ``datalist`` and publish the model.

    Overrides: ``bundle_root``; ``dataset_dir``/``datalist`` → the work folder's ``datalist.json``;
    ``build_demo_data`` false; ``ckpt_dir``/``output_dir`` → the work folder; ``max_epochs``; ``val_interval``
    (default ``min(bundle value, max_epochs)`` so that at least one validation runs); ``finetune`` (start from the
    bundle's ``models/model.pt`` when ``pretrained`` and present); ``resume`` false; ``device``.

    The model published is the best one saved by the bundle's ``BestModelSaver``; when no validation gave a finite
    metric (tiny validation sets), the last epoch's weights are published instead and the result says so.

    Args:
        spec: the bundle.
        datalist: ``{"training": [...], "validation": [...], ...}`` with absolute image paths.
        work_dir: folder for this run (created).
        overlays: config file names in ``configs/`` merged over ``train.json`` (e.g. ``["demo.json"]``).
        max_epochs: epochs (default: the bundle's).
        pretrained: fine-tune from the bundle's current weights when it has some.
        device: e.g. ``"cpu"`` or ``"cuda:0"`` (default: the bundle's).
        val_interval: validation interval in epochs.
        publish: copy the new model into ``<bundle>/models/model.pt``.
        extra_overrides: more plain values for the config (numbers/bools only; used by tests and trusted callers).

    Returns:
        A JSON-able summary: epochs, sizes, the saved metric, where the model went.

    Raises:
        TrainingError: the workflow failed or no model was written.
    """
    from monai.bundle import ConfigWorkflow

    start = time.time()
    work = Path(work_dir).absolute()
    ckpt_dir = work / "models"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    datalist_path = write_datalist(work / "datalist.json", datalist)

    base = read_bundle_config(spec, "train", overlays)
    bundle_epochs = int(base.get_parsed_content("max_epochs")) if "max_epochs" in base else 1
    epochs = int(max_epochs) if max_epochs is not None else bundle_epochs
    if val_interval is None:
        bundle_interval = int(base.get_parsed_content("val_interval")) if "val_interval" in base else 1
        val_interval = max(1, min(bundle_interval, epochs))
    finetune = bool(pretrained and spec.has_weights)
    if finetune:
        shutil.copyfile(spec.weights_path, ckpt_dir / "model.pt")  # no model.pt.json: a fresh "best" for new data

    overrides: dict[str, Any] = {
        "bundle_root": os.fspath(spec.path),
        "dataset_dir": os.fspath(work),
        "datalist": os.fspath(datalist_path),
        "build_demo_data": False,
        "ckpt_dir": os.fspath(ckpt_dir),
        "output_dir": os.fspath(work / "eval"),
        "max_epochs": epochs,
        "val_interval": int(val_interval),
        "finetune": finetune,
        "resume": False,
    }
    if device is not None:
        overrides["device"] = torch.device(device)
    for key, value in (extra_overrides or {}).items():
        if not isinstance(value, (bool, int, float)) or isinstance(value, str):
            raise TrainingError(f"override {key!r} must be a number or a bool, got {value!r}")
        overrides[key] = value

    config_files = [os.fspath(f) for f in spec.config_files("train", overlays)]
    meta = spec.configs_dir / "metadata.json"
    logger.info("fine-tuning %s: %s with %s", spec.name, config_files, overrides)
    try:
        workflow = ConfigWorkflow(
            config_file=config_files,
            meta_file=os.fspath(meta) if meta.is_file() else None,
            logging_file=False,
            workflow_type="train",
            **overrides,
        )
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    except Exception as e:
        root: BaseException = e
        while root.__cause__ is not None:  # MONAI wraps errors in "Failed to evaluate ConfigExpression"
            root = root.__cause__
        raise TrainingError(f"training bundle '{spec.name}' failed: {type(root).__name__}: {root}") from e

    model_file, record_file = ckpt_dir / "model.pt", ckpt_dir / "model.pt.json"
    record: dict[str, Any] | None = None
    if record_file.is_file():
        record = json.loads(record_file.read_text(encoding="utf-8"))
        saved = "best"
    else:
        network = workflow.parser.get_parsed_content("network")
        network = getattr(network, "module", network)
        atomic_torch_save({k: v.detach().cpu() for k, v in network.state_dict().items()}, model_file)
        saved = "last (no validation gave a finite metric)"
    summary: dict[str, Any] = {
        "bundle": spec.name,
        "epochs": epochs,
        "val_interval": int(val_interval),
        "finetuned_from_previous": finetune,
        "num_training": len(datalist.get("training", [])),
        "num_validation": len(datalist.get("validation", [])),
        "saved": saved,
        "metric": record,
        "work_dir": os.fspath(work),
        "datalist": os.fspath(datalist_path),
        "published": None,
        "seconds": round(time.time() - start, 2),
    }
    if publish:
        target = spec.weights_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            _copy_atomic(target, target.with_name("model.previous.pt"))
        _copy_atomic(model_file, target)
        published_record = dict(record or {})
        published_record.update(source="monai_iqad.label fine-tune", saved=saved, datalist=summary["datalist"])
        if record is None:
            published_record.pop("value", None)  # no metric: never blocks a later run's BestModelSaver
        atomic_write_json(target.with_name("model.pt.json"), published_record)
        summary["published"] = os.fspath(target)
    return summary
