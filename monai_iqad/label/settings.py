"""The app's ``--conf KEY VALUE`` options, parsed and checked (pure Python; no ``monailabel``).

=====================  =========================================================================================
key                    meaning (default)
=====================  =========================================================================================
``bundles_dir``        folder of bundle folders (``$MONAI_IQAD_BUNDLES``, else the checkout's ``bundles/``)
``models``             comma-separated bundle names to serve, or ``all`` (all SAQM/MKCNet bundles found)
``quality_threshold``  triage: the diagnosis is ``gated_by_quality`` when the SAQM score is below it (0.5)
``triage``             serve the ``triage`` task when a SAQM and an MKCNet bundle are served (true)
``triage_quality``     SAQM bundle used by triage (the first SAQM bundle)
``triage_diagnosis``   MKCNet bundle used by triage (the first MKCNet bundle)
``overlays``           comma-separated config files of each bundle's ``configs/`` merged over ``inference.json`` and
                       ``train.json`` when present, e.g. ``demo.json`` for weights trained with the demo overlay ("")
``work_dir``           training runs (datalists, checkpoints, logs) (``<app_dir>/work``)
``skip_trainers``      serve no train tasks (false)
``patch_scores``       SAQM replies include the patch-score grid (true)
``extensions``         comma-separated datastore file patterns (PNG/JPEG/BMP/TIFF, DICOM ``*.dcm``, NIfTI)
``max_upload_mb``      largest uploaded image or label file accepted, in MiB (512)
=====================  =========================================================================================

Boolean values (``true/false``, ``yes/no``, ``on/off``, ``1/0``) go through :func:`monai_iqad.utils.config.as_bool`,
the parser the bundle configs use too (:func:`check_bool` only names the option in the error).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_iqad.utils.config import as_bool

from .bundles import default_bundles_dir, parse_list
from .safety import InvalidParameterError, check_positive_int, check_threshold

__all__ = ["DATASTORE_EXTENSIONS", "LabelAppSettings", "check_bool"]

DATASTORE_EXTENSIONS = (
    "*.png",
    "*.jpg",
    "*.jpeg",
    "*.bmp",
    "*.tif",
    "*.tiff",
    "*.dcm",
    "*.dicom",
    "*.nii.gz",
    "*.nii",
)

KNOWN_KEYS = (
    "bundles_dir",
    "models",
    "quality_threshold",
    "triage",
    "triage_quality",
    "triage_diagnosis",
    "overlays",
    "work_dir",
    "skip_trainers",
    "patch_scores",
    "extensions",
    "max_upload_mb",
)


def check_bool(value: Any, name: str) -> bool:
    """A boolean option or request parameter, parsed by :func:`monai_iqad.utils.config.as_bool`.

    Raises:
        InvalidParameterError: a value ``as_bool`` refuses (the message names the parameter).
    """
    try:
        return as_bool(value)
    except ValueError:
        raise InvalidParameterError(f"'{name}' must be true or false, got {value!r}") from None


@dataclass
class LabelAppSettings:
    """Parsed app options (see the module docstring)."""

    bundles_dir: Path
    models: list[str] = field(default_factory=list)
    quality_threshold: float = 0.5
    triage: bool = True
    triage_quality: str | None = None
    triage_diagnosis: str | None = None
    overlays: list[str] = field(default_factory=list)
    work_dir: Path | None = None
    skip_trainers: bool = False
    patch_scores: bool = True
    extensions: list[str] = field(default_factory=lambda: list(DATASTORE_EXTENSIONS))
    max_upload_mb: int = 512

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any] | None, app_dir: str | os.PathLike | None = None) -> LabelAppSettings:
        """Parse MONAI Label's ``conf`` dict (string values).

        Raises:
            InvalidParameterError: a malformed value (threshold outside ``[0, 1]``, bad boolean, overlay with a path,
                upload limit below 1 MiB).
        """
        conf = dict(conf or {})
        bundles_dir = conf.get("bundles_dir")
        overlays = parse_list(conf.get("overlays"))
        for name in overlays:
            if Path(name).name != name or not name.endswith((".json", ".yaml", ".yml")):
                raise InvalidParameterError(f"--conf overlays: {name!r} must be a config file name in configs/")
        work_dir = conf.get("work_dir")
        if not work_dir and app_dir is not None:
            work_dir = os.path.join(os.fspath(app_dir), "work")
        return cls(
            bundles_dir=Path(bundles_dir).expanduser().absolute() if bundles_dir else default_bundles_dir(),
            models=[m for m in parse_list(conf.get("models")) if m != "all"],
            quality_threshold=check_threshold(conf.get("quality_threshold", 0.5)),
            triage=check_bool(conf.get("triage", True), "triage"),
            triage_quality=conf.get("triage_quality") or None,
            triage_diagnosis=conf.get("triage_diagnosis") or None,
            overlays=overlays,
            work_dir=Path(work_dir).expanduser().absolute() if work_dir else None,
            skip_trainers=check_bool(conf.get("skip_trainers", False), "skip_trainers"),
            patch_scores=check_bool(conf.get("patch_scores", True), "patch_scores"),
            extensions=parse_list(conf.get("extensions")) or list(DATASTORE_EXTENSIONS),
            max_upload_mb=check_positive_int(conf.get("max_upload_mb", 512), "max_upload_mb"),
        )

    def as_info(self) -> dict[str, Any]:
        """JSON-able summary for ``/info/``."""
        return {
            "bundles_dir": os.fspath(self.bundles_dir),
            "models": self.models or ["all"],
            "quality_threshold": self.quality_threshold,
            "triage": self.triage,
            "overlays": self.overlays,
            "patch_scores": self.patch_scores,
            "extensions": self.extensions,
            "max_upload_mb": self.max_upload_mb,
        }
