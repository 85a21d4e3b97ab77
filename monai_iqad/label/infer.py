"""MONAI Label infer tasks over the local bundles (needs ``monailabel``).

- :class:`BundleQualityInferTask` (SAQM): ``{"quality": {"score", "patch_scores", "patch_grid", "patch_size",
  "model"}}``.
- :class:`BundleDiagnosisInferTask` (MKCNet): ``{"diagnosis": {"label", "index", "probabilities"},
  "quality": {"grade", "index", "probabilities"}, "model"}``.
- :class:`TriageInferTask`: SAQM first, then the MKCNet diagnosis flagged ``gated_by_quality`` when the score is below
  the threshold.

The network is built from the bundle folder (:func:`monai_iqad.label.bundles.load_inference_model`), never from the
model zoo; ``models/model.pt`` is required (no random weights) and reloaded when its modification time changes.
Per-request logging defaults to WARNING (MONAI Label resets its task logger to the request's ``logging`` level).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import Compose
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from .bundles import (
    WEIGHTS_MISSING,
    BundleError,
    BundleSpec,
    InferenceModel,
    MissingWeightsError,
    WeightsMismatchError,
    load_inference_model,
    mkcnet_class_names,
)
from .results import HEADS, diagnosis_result, quality_result, triage_result
from .safety import check_threshold
from .settings import check_bool

__all__ = [
    "InvalidInputError",
    "BundleInferTask",
    "BundleQualityInferTask",
    "BundleDiagnosisInferTask",
    "TriageInferTask",
    "make_infer_task",
]

logger = logging.getLogger(__name__)

DEFAULT_LOGGING = "WARNING"


class InvalidInputError(ValueError):
    """The input image cannot be read or preprocessed (corrupt file, wrong format, too small, frame out of range)."""


def _flatten(transforms: Any) -> list:
    if isinstance(transforms, Compose):
        out: list = []
        for t in transforms.transforms:
            out += _flatten(t)
        return out
    if isinstance(transforms, (list, tuple)):
        return [t for x in transforms for t in _flatten(x)]
    return [transforms]


class BundleInferTask(BasicInferTask):
    """Base of the bundle infer tasks: network + preprocessing from the bundle folder, JSON-only writer.

    Args:
        spec: the bundle.
        overlays: config file names in the bundle's ``configs/`` merged over ``inference.json``.
        infer_type: MONAI Label task type.
        labels: label names shown in ``/info/``.
        config: extra user-visible config (merged into each request).
    """

    def __init__(
        self,
        spec: BundleSpec,
        overlays: Sequence[str] = (),
        infer_type: InferType | str = InferType.CLASSIFICATION,
        labels: Sequence[str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.overlays = list(overlays)
        self._models: dict[str, InferenceModel] = {}
        self._lock = threading.Lock()
        self.load_error: str | None = None
        self._weights_error: tuple[float, str] | None = None  # (model.pt mtime, why it does not load)
        super().__init__(
            path=str(spec.weights_path),
            network=None,
            type=infer_type,
            labels=list(labels or []),
            dimension=2,
            description=spec.description(),
            config={"logging": DEFAULT_LOGGING, **(config or {})},
            load_strict=True,
        )
        self._config.pop("model_filename", None)

    # -- what /info/ shows -------------------------------------------------------------------------------------------
    def is_valid(self) -> bool:
        """Listed in ``/info/`` even without weights, so that the missing weights are reported there."""
        return True

    def weights_status(self) -> str:
        """The bundle's weights status, or ``"unusable: ..."`` when the current ``model.pt`` failed to load."""
        error = self._weights_error
        if error is not None:
            try:
                if self.spec.weights_path.stat().st_mtime == error[0]:
                    return f"unusable: {error[1]}"
            except OSError:  # removed meanwhile
                pass
        return self.spec.weights_status()

    def info(self) -> dict[str, Any]:
        out = super().info()
        status = self.weights_status()
        out["weights"] = status
        out["bundle"] = {"name": self.spec.name, "kind": self.spec.kind, "path": str(self.spec.path)}
        if status.startswith("missing"):
            out["description"] = f"{out['description']} [weights {status}]"
        if self.load_error:
            out["error"] = self.load_error
        return out

    # -- network -----------------------------------------------------------------------------------------------------
    def inference_model(self, device: str) -> InferenceModel:
        """The loaded model for ``device`` (reloaded when ``models/model.pt`` changed).

        Raises:
            MissingWeightsError: the bundle has no ``models/model.pt``.
        """
        with self._lock:
            cached = self._models.get(device)
            if not self.spec.has_weights:
                self._models.pop(device, None)
                raise MissingWeightsError(
                    f"model '{self.spec.name}' has no trained weights: {self.spec.weights_path} is missing "
                    "(train the bundle first)"
                )
            mtime = self.spec.weights_path.stat().st_mtime
            if cached is None or cached.weights_mtime != mtime:
                if cached is not None:
                    logger.warning("%s: models/model.pt changed, reloading", self.spec.name)
                try:
                    cached = load_inference_model(self.spec, self.overlays, device=device)
                except WeightsMismatchError as e:
                    self._models.pop(device, None)
                    self._weights_error = (mtime, str(e))
                    raise
                self._weights_error = None
                self._models[device] = cached
            return cached

    def _get_network(self, device, data):
        return self.inference_model(str(device)).network

    def clear(self):
        self._models.clear()

    clear_cache = clear

    # -- pipeline ----------------------------------------------------------------------------------------------------
    def pre_transforms(self, data=None):
        device = str(data.get("device", "cpu")) if data else "cpu"
        return _flatten(self.inference_model(device).preprocessing)

    def run_pre_transforms(self, data, transforms):
        try:
            return super().run_pre_transforms(data, transforms)
        except Exception as e:
            cause: BaseException = e
            while cause.__cause__ is not None and isinstance(cause, RuntimeError):
                cause = cause.__cause__  # MONAI wraps transform errors in RuntimeError("applying transform ...")
            message = str(cause)
            if "slice_index" in message:
                message += " (request parameter 'slice')"
            raise InvalidInputError(f"cannot read or preprocess the image: {message}") from e

    def post_transforms(self, data=None):
        return []

    def inverse_transforms(self, data=None):
        return None

    def _inputs(self, data, device) -> torch.Tensor:
        image = data[self.input_key]
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        return image[None].to(torch.device(device), dtype=torch.float32)

    def result(self, model: InferenceModel, data: dict) -> dict[str, Any]:
        raise NotImplementedError

    def writer(self, data, extension=None, dtype=None):
        model = self.inference_model(str(data.get("device", "cpu")))
        return None, self.result(model, data)


class BundleQualityInferTask(BundleInferTask):
    """SAQM image quality score (``[0, 1]``, higher = better) and its patch-score grid.

    Request options: ``patch_scores`` (bool, default true), ``frame``, ``slice``.
    """

    def __init__(self, spec: BundleSpec, overlays: Sequence[str] = (), patch_scores: bool = True) -> None:
        super().__init__(spec, overlays, InferType.OTHERS, ["quality score"], {"patch_scores": bool(patch_scores)})

    def run_inferer(self, data, convert_to_batch=True, device="cuda"):
        network = self._get_network(device, data)
        x = self._inputs(data, device)
        with torch.no_grad():
            if check_bool(data.get("patch_scores", True), "patch_scores") and hasattr(network, "score_map"):
                grid = network.score_map(x)  # (1, 1, nh, nw); the image score is its mean (SAQM)
                data["patch_map"] = grid[0, 0].cpu()
                score = grid.mean(dim=(2, 3))
            else:
                score = network(x)
        data[self.output_label_key] = score.reshape(-1).cpu()
        return data

    def result(self, model, data):
        return quality_result(
            data[self.output_label_key][0], self.spec.name, data.get("patch_map"), patch_size=model.patch_size
        )


class BundleDiagnosisInferTask(BundleInferTask):
    """MKCNet diagnosis and image-quality grade (softmax probabilities of both heads).

    Request options: ``frame``, ``slice``.
    """

    def __init__(self, spec: BundleSpec, overlays: Sequence[str] = ()) -> None:
        labels: list[str] = []
        error = None
        try:
            labels = mkcnet_class_names(spec)[2]
        except Exception as e:  # a bundle being edited: report it in /info/, fail at inference
            error = f"{type(e).__name__}: {e}"
            logger.warning("bundle %s: %s", spec.name, error)
        super().__init__(spec, overlays, InferType.CLASSIFICATION, labels)
        self.load_error = error

    def run_inferer(self, data, convert_to_batch=True, device="cuda"):
        network = self._get_network(device, data)
        with torch.no_grad():
            out = network(self._inputs(data, device))
        # the one image's output as MONAI postprocessing sees a decollated item: a dict of heads or a packed tensor
        data[self.output_label_key] = (
            {k: v[0].cpu() for k, v in out.items()} if isinstance(out, Mapping) else out[0].cpu()
        )
        return data

    def post_transforms(self, data=None):
        """The bundle's postprocessing: each head under ``<head>_pred`` (:class:`monai_iqad.transforms.SplitHeadsd`)."""
        device = str(data.get("device", "cpu")) if data else "cpu"
        return _flatten(self.inference_model(device).postprocessing)

    def result(self, model, data):
        missing = [f"{h}_pred" for h in HEADS if f"{h}_pred" not in data]
        if missing:
            raise BundleError(f"bundle '{self.spec.name}': its postprocessing gives no {missing}")
        heads = {h: data[f"{h}_pred"] for h in HEADS}
        return diagnosis_result(heads, model.diagnosis_names, model.quality_names, self.spec.name)


class TriageInferTask(InferTask):
    """Quality first, then diagnosis: runs a SAQM task and an MKCNet task on the same image and flags the diagnosis
    ``gated_by_quality: true`` when the quality score is below ``threshold``.

    Request options: ``quality_threshold`` (overrides the server's), ``frame``, ``slice``, ``patch_scores``.

    Args:
        quality_task: SAQM task.
        diagnosis_task: MKCNet task.
        threshold: default quality threshold in ``[0, 1]``.
    """

    def __init__(
        self, quality_task: BundleQualityInferTask, diagnosis_task: BundleDiagnosisInferTask, threshold: float = 0.5
    ) -> None:
        self.quality_task = quality_task
        self.diagnosis_task = diagnosis_task
        self.threshold = check_threshold(threshold)
        super().__init__(
            type=InferType.CLASSIFICATION,
            labels=list(diagnosis_task.labels),
            dimension=2,
            description=(
                f"triage: quality score by '{quality_task.spec.name}', then diagnosis by "
                f"'{diagnosis_task.spec.name}', gated when the score < {self.threshold}"
            ),
            config={"quality_threshold": self.threshold, "logging": DEFAULT_LOGGING},
        )

    def is_valid(self) -> bool:
        return True

    def weights_status(self) -> str:
        parts = {t.spec.name: t.weights_status() for t in (self.quality_task, self.diagnosis_task)}
        missing = [name for name, status in parts.items() if status.startswith("missing")]
        if missing:
            return f"{WEIGHTS_MISSING} ({', '.join(missing)})"
        unusable = [name for name, status in parts.items() if status.startswith("unusable")]
        return f"unusable ({', '.join(unusable)})" if unusable else "ok"

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["weights"] = self.weights_status()
        out["quality_model"] = self.quality_task.spec.name
        out["diagnosis_model"] = self.diagnosis_task.spec.name
        return out

    def __call__(self, request):
        req = copy.deepcopy(self._config)
        req.update(request)
        threshold = check_threshold(req.get("quality_threshold", self.threshold))
        sub = {k: v for k, v in req.items() if k != "quality_threshold"}
        _, quality = self.quality_task(copy.deepcopy(sub))
        _, diagnosis = self.diagnosis_task(copy.deepcopy(sub))
        out = triage_result(quality, diagnosis, threshold)
        out["latencies"] = {
            "quality": quality.get("latencies", {}).get("total"),
            "diagnosis": diagnosis.get("latencies", {}).get("total"),
        }
        return None, out


def make_infer_task(spec: BundleSpec, overlays: Sequence[str] = (), patch_scores: bool = True) -> BundleInferTask:
    """The infer task for a bundle of either kind."""
    if spec.kind == "saqm":
        return BundleQualityInferTask(spec, overlays, patch_scores=patch_scores)
    return BundleDiagnosisInferTask(spec, overlays)
