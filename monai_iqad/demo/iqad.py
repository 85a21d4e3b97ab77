"""The MKCNet quality-aware diagnosis demos (``eyeq``, ``deepdr``, ``drac``, ``iqad_ct``, ``iqad_cxr``).

Diagnosis labels come from SIMULATED lesions inserted by :mod:`.renderers` into real (fundus, CT, CR) or procedural
(OCTA) images; quality labels come from graded degradations applied after the lesions, so low quality hides lesions.
Class counts, channels and diagnosis names come from :data:`monai_iqad.data.IQAD_DATASETS`.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_iqad.data import get_dataset_info, write_datalist
from monai_iqad.transforms.degradations import degrade

from . import sources
from .renderers import RENDERERS
from .utils import item_rng, save_png

__all__ = [
    "IQAD_DEMO_DATASETS",
    "IQAD_DEMO_DEGRADATIONS",
    "IQAD_DEMO_QUALITY_NAMES",
    "make_iqad_demo_data",
    "simulate_iqad_sample",
]

#: Degradation kinds that define the quality grades of each IQAD demo (class counts, channels and diagnosis names
#: come from :data:`monai_iqad.data.datasets.IQAD_DATASETS`).
IQAD_DEMO_DEGRADATIONS: dict[str, tuple[str, ...]] = {
    "eyeq": ("gaussian_blur", "uneven_illumination", "low_contrast", "gaussian_noise"),
    "deepdr": ("gaussian_blur", "uneven_illumination", "low_contrast", "gaussian_noise"),
    "drac": ("motion_blur", "gaussian_blur", "gaussian_noise", "low_contrast"),
    "iqad_ct": ("jpeg", "gaussian_blur", "low_contrast", "gaussian_noise"),
    "iqad_cxr": ("gaussian_blur", "gaussian_noise", "low_contrast", "jpeg"),
}

#: What the quality grades mean in the demos (0 = worst): 2 grades = degraded / clean, 3 = strong / mild / clean.
IQAD_DEMO_QUALITY_NAMES: dict[int, tuple[str, ...]] = {
    2: ("degraded (one kind at severity 4-5 + another at 2-3)", "clean"),
    3: ("strongly degraded (one kind at severity 4-5 + another at 2-3)", "mildly degraded (one kind at 2-3)", "clean"),
}

#: Names accepted by :func:`make_iqad_demo_data`.
IQAD_DEMO_DATASETS: tuple[str, ...] = tuple(IQAD_DEMO_DEGRADATIONS)


@dataclass(frozen=True)
class _DemoSpec:
    """What one IQAD demo simulates: modality, class counts, channels, diagnosis names and quality kinds."""

    modality: str
    num_diagnosis: int
    num_quality: int
    channels: int
    diagnosis_names: tuple[str, ...]
    kinds: tuple[str, ...]


def _quality_plan(
    num_quality: int, quality: int, kinds: Sequence[str], rng: np.random.Generator
) -> list[tuple[str, int]]:
    """Degradations ``[(kind, severity), ...]`` for a quality grade (applied in order, after the lesions).

    - best grade (``num_quality - 1``): none;
    - 3 grades, middle (1): one kind at severity 2–3;
    - worst grade (0): one kind at severity 4–5 followed by a different kind at severity 2–3.
    """
    if quality == num_quality - 1:
        return []
    first, second = (kinds[i] for i in rng.permutation(len(kinds))[:2])
    if num_quality == 3 and quality == 1:
        return [(first, int(rng.integers(2, 4)))]
    return [(first, int(rng.integers(4, 6))), (second, int(rng.integers(2, 4)))]


def simulate_iqad_sample(
    dataset: str,
    diagnosis: int,
    quality: int,
    rng: np.random.Generator | int | None = None,
    image_size: int = 64,
    noise_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one IQAD demo image and its lesion-free twin (same base, same degradations, same noise).

    The base image and the lesions are drawn from ``rng`` BEFORE the quality plan, so the same seed gives the same
    lesioned scene at every quality grade (the best grade is the undegraded scene).

    Args:
        dataset: one of ``IQAD_DEMO_DATASETS``.
        diagnosis: diagnosis grade in ``[0, num_diagnosis)`` (0 = no lesion).
        quality: quality grade in ``[0, num_quality)`` (highest = best = undegraded).
        rng: numpy Generator or seed.
        image_size: side of the square image.
        noise_seed: seed of the degradation noise (default: drawn from ``rng``); another value gives the same scene
            and degradation plan with an independent noise realisation.

    Returns:
        ``(image, lesion_free)``, float64 in [0, 1], ``(S, S, 3)`` for fundus and ``(S, S)`` otherwise.

    Raises:
        ValueError: unknown dataset or label out of range.
        RuntimeError: a required real image (pydicom-data) is missing.
    """
    spec = _iqad_spec(dataset)
    if not 0 <= diagnosis < spec.num_diagnosis or not 0 <= quality < spec.num_quality:
        raise ValueError(
            f"{dataset}: diagnosis must be in [0, {spec.num_diagnosis}) and quality in [0, {spec.num_quality}), "
            f"got ({diagnosis}, {quality})."
        )
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    img, clean, mask = RENDERERS[spec.modality](image_size, diagnosis, rng)
    plan = _quality_plan(spec.num_quality, quality, spec.kinds, rng)
    drawn = int(rng.integers(0, 2**31 - 1))
    noise_seed = drawn if noise_seed is None else int(noise_seed)
    scale = image_size / 64.0
    outs = []
    for x in (img, clean):
        drng = np.random.default_rng(noise_seed)
        for kind, severity in plan:
            x = degrade(x, kind, severity, drng, spatial_scale=scale)
        if mask is not None:  # fundus: the camera's field of view stays black
            x = x * (mask[..., None] if x.ndim == 3 else mask)
        outs.append(np.clip(x, 0.0, 1.0))
    return outs[0], outs[1]


def _iqad_spec(dataset: str) -> _DemoSpec:
    """Demo spec of ``dataset`` from the shared dataset constants plus the demo's degradation kinds.

    Raises:
        ValueError: unknown dataset.
    """
    key = str(dataset).strip().lower().replace("-", "_")
    if key not in IQAD_DEMO_DEGRADATIONS:
        raise ValueError(f"unknown IQAD demo dataset {dataset!r}; expected one of {IQAD_DEMO_DATASETS}.")
    info = get_dataset_info(key)
    return _DemoSpec(
        info.modality,
        info.num_diagnosis,
        info.num_quality,
        info.channels,
        tuple(info.diagnosis_names),
        IQAD_DEMO_DEGRADATIONS[key],
    )


def make_iqad_demo_data(
    out_dir: str | os.PathLike,
    dataset: str,
    seed: int = 0,
    num_images: int | None = None,
    image_size: int = 64,
    split_fractions: tuple[float, float] = (0.2, 0.2),
) -> Path:
    """Build one quality-aware diagnosis demo (MKCNet) under ``out_dir`` and return the datalist path.

    Images are balanced over the ``num_diagnosis * num_quality`` (diagnosis, quality) pairs, and every pair is split
    ``1 - val - test : val : test`` separately, so each split holds every pair. Diagnosis comes from simulated lesions,
    quality from degradations applied after them (:func:`simulate_iqad_sample`, ``docs/demo_data.md``).

    Args:
        out_dir: output folder (created): ``images/NNNN.png`` and ``datalist.json``; files are overwritten.
        dataset: ``"eyeq"``, ``"deepdr"``, ``"drac"``, ``"iqad_ct"`` or ``"iqad_cxr"``.
        seed: random seed; the same seed gives byte-identical files.
        num_images: total number of images (default ``20 * num_diagnosis * num_quality``); at least 3 per pair.
        image_size: side of the square images (e.g. 64 or 128).
        split_fractions: (validation, test) fractions of each pair (at least one image each).

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: unknown dataset, too few images, bad size or fractions.
        RuntimeError: ``iqad_cxr`` without pydicom-data (``pip install pydicom-data``).
    """
    spec = _iqad_spec(dataset)
    key = str(dataset).strip().lower().replace("-", "_")
    pairs = [(d, q) for q in range(spec.num_quality) for d in range(spec.num_diagnosis)]
    if num_images is None:
        num_images = 20 * len(pairs)
    if num_images < 3 * len(pairs):
        raise ValueError(f"{key}: num_images must be >= {3 * len(pairs)} (3 per (diagnosis, quality) pair).")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}.")
    val_frac, test_frac = split_fractions
    if val_frac <= 0 or test_frac <= 0 or val_frac + test_frac >= 1:
        raise ValueError(f"split_fractions must be positive and sum to < 1, got {split_fractions}.")
    if spec.modality == "cxr" and sources.dicom_path("RG1_UNCR.dcm") is None:
        raise RuntimeError(
            "the iqad_cxr demo needs the real chest radiograph RG1_UNCR.dcm from pydicom-data: "
            f"`{sources.INSTALL_HINT}`."
        )
    if spec.modality == "ct" and sources.dicom_path("693_UNCR.dcm") is None:
        warnings.warn(
            "pydicom-data is not installed: the iqad_ct demo uses only pydicom's CT_small.dcm "
            f"(`{sources.INSTALL_HINT}`).",
            RuntimeWarning,
            stacklevel=2,
        )
    out = Path(out_dir)
    # labels per image: balanced pairs, split per pair
    jobs: list[tuple[int, int, str]] = []
    base_n, extra = divmod(num_images, len(pairs))
    for p, (d, q) in enumerate(pairs):
        n = base_n + (1 if p < extra else 0)
        n_val = max(1, int(round(val_frac * n)))
        n_test = max(1, int(round(test_frac * n)))
        n_train = n - n_val - n_test
        jobs += [(d, q, "training")] * n_train + [(d, q, "validation")] * n_val + [(d, q, "test")] * n_test
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())]).permutation(len(jobs))
    sections: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    for index, j in enumerate(order):
        d, q, split = jobs[int(j)]
        img, _ = simulate_iqad_sample(key, d, q, item_rng(seed, key, index), image_size)
        rel = f"images/{index:04d}.png"
        save_png(out / rel, img)
        sections[split].append({"image": rel, "diagnosis": int(d), "quality": int(q)})
    datalist = {
        "name": f"monai_iqad {key} demo (simulated lesions + graded degradations)",
        "description": (
            "Synthetic quality-aware diagnosis demo for validating the MKCNet pipeline, NOT a clinical data set. "
            "Diagnosis = simulated lesions; quality = degradations applied after them (see docs/demo_data.md)."
        ),
        "dataset": key,
        "modality": spec.modality,
        "num_diagnosis": spec.num_diagnosis,
        "num_quality": spec.num_quality,
        "num_channels": spec.channels,
        "diagnosis_names": list(spec.diagnosis_names),
        "quality_names": list(IQAD_DEMO_QUALITY_NAMES[spec.num_quality]),
        "joint_label": "quality * num_diagnosis + diagnosis",
        "seed": int(seed),
        "image_size": int(image_size),
        **sections,
    }
    path = out / "datalist.json"
    write_datalist(path, datalist, base_dir=out)
    return path
