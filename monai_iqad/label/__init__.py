"""monai_iqad.label: MONAI Label integration over the project's bundles (offline).

The helpers imported here are pure (MONAI, torch, numpy; no ``monailabel``): bundle discovery and loading
(:mod:`.bundles`), datastore labels → datalist (:mod:`.labels`), input checks (:mod:`.safety`), JSON replies
(:mod:`.results`), app options (:mod:`.settings`) and running a bundle's own ``train.json`` on a datalist to fine-tune
it (:mod:`.finetune`). The MONAI Label parts need ``monailabel`` (``bash scripts/install_monailabel.sh``) and are
imported on demand: the infer tasks in :mod:`monai_iqad.label.infer`, the train task (datastore labels → datalist →
:mod:`.finetune`) in :mod:`monai_iqad.label.train`, the app in ``monai_iqad/label/app/main.py``.
"""

from __future__ import annotations

import os

from .bundles import (
    BundleError,
    BundleSpec,
    InferenceModel,
    MissingWeightsError,
    WeightsMismatchError,
    bundle_kind,
    default_bundles_dir,
    discover_bundles,
    load_inference_model,
    mkcnet_class_names,
)
from .finetune import TrainingError, run_bundle_training
from .labels import LabelError, build_datalist, default_mos_range, extract_labels, labels_for_bundle
from .results import diagnosis_result, quality_result, triage_result
from .safety import (
    ImageNotFoundError,
    InvalidImageIdError,
    InvalidParameterError,
    resolve_image,
    validate_image_id,
    validate_label_tag,
)
from .settings import DATASTORE_EXTENSIONS, LabelAppSettings

APP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app")
"""Folder of the MONAI Label app (``main.py``)."""
