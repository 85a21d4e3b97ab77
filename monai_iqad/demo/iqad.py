"""The MKCNet quality-aware diagnosis demos (``eyeq``, ``deepdr``, ``drac``, ``iqad_ct``, ``iqad_cxr``).

Diagnosis labels come from SIMULATED lesions inserted by :mod:`.renderers` into real (fundus, CT, CR) or procedural
(OCTA) images; quality labels come from graded degradations applied after the lesions, so low quality hides lesions.
Class counts, channels and diagnosis names come from :data:`monai_iqad.data.IQAD_DATASETS`.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monai_iqad.data import get_dataset_info, write_datalist
from monai_iqad.transforms.degradations import gamma_contrast, gaussian_blur, gaussian_noise

from . import sources
from .renderers import RENDERERS
from .utils import item_rng, save_png

__all__ = [
    "IQAD_DEMO_DATASETS",
    "IQAD_DEMO_DEGRADATIONS",
    "IQAD_DEMO_QUALITY_NAMES",
    "QualityEffect",
    "make_iqad_demo_data",
    "simulate_iqad_sample",
]


@dataclass(frozen=True)
class QualityEffect:
    """The low-quality effect of one IQAD demo at full strength (the worst grade); grade ``q`` of ``Q`` applies it at
    strength ``s = (Q - 1 - q) / (Q - 1)`` (1 = worst, 0 = best = none).

    The image ``x`` in [0, 1] becomes ``haze + contrast * x ** gamma`` (a grade-dependent change of the intensity
    mapping that moves background AND lesions), then a Gaussian blur of ``blur`` px (at 64 px) and white noise of
    standard deviation ``noise``; at strength ``s`` the exponent is ``gamma ** s``, the contrast
    ``1 - s (1 - contrast)``, the haze, blur and noise ``s`` times theirs, each jittered per image by a factor in
    ``1 ± jitter``.
    """

    gamma: float
    contrast: float
    haze: float
    blur: float
    noise: float
    jitter: float = 0.2


#: The low-quality effect of each IQAD demo at its worst grade (see :class:`QualityEffect`, ``docs/demo_data.md``):
#: fundus EyeQ under-exposed (gamma > 1), DeepDR and CT washed out (haze), OCTA and CXR darkened and flattened.
IQAD_DEMO_DEGRADATIONS: dict[str, QualityEffect] = {
    "eyeq": QualityEffect(gamma=1.6, contrast=0.6, haze=0.1, blur=1.0, noise=0.04),
    "deepdr": QualityEffect(gamma=1.4, contrast=0.55, haze=0.25, blur=0.9, noise=0.04),
    "drac": QualityEffect(gamma=1.5, contrast=0.6, haze=0.15, blur=0.7, noise=0.05),
    "iqad_ct": QualityEffect(gamma=1.5, contrast=0.55, haze=0.3, blur=0.8, noise=0.04),
    "iqad_cxr": QualityEffect(gamma=1.6, contrast=0.55, haze=0.2, blur=0.9, noise=0.04),
}

#: What the quality grades mean in the demos (0 = worst): 2 grades = degraded / clean, 3 = strong / mild / clean.
IQAD_DEMO_QUALITY_NAMES: dict[int, tuple[str, ...]] = {
    2: ("degraded (gamma, contrast, haze, blur, noise)", "clean"),
    3: (
        "strongly degraded (gamma, contrast, haze, blur, noise)",
        "mildly degraded (the same at half strength)",
        "clean",
    ),
}

#: Names accepted by :func:`make_iqad_demo_data`.
IQAD_DEMO_DATASETS: tuple[str, ...] = tuple(IQAD_DEMO_DEGRADATIONS)


@dataclass(frozen=True)
class _DemoSpec:
    """What one IQAD demo simulates: modality, class counts, channels, diagnosis names and quality effect."""

    modality: str
    num_diagnosis: int
    num_quality: int
    channels: int
    diagnosis_names: tuple[str, ...]
    effect: QualityEffect


def _quality_params(
    effect: QualityEffect, num_quality: int, quality: int, rng: np.random.Generator
) -> tuple[float, float, float, float, float]:
    """``(gamma, contrast, haze, blur, noise)`` of one image of grade ``quality`` (identity for the best grade).

    Strength ``s = (num_quality - 1 - quality) / (num_quality - 1)``; every parameter's departure from identity is
    scaled by ``s`` and by a per-image factor drawn in ``1 ± effect.jitter`` (five draws, also for the best grade, so
    the same seed gives the same scene at every grade).
    """
    s = (num_quality - 1 - quality) / (num_quality - 1)
    j = 1.0 + effect.jitter * rng.uniform(-1.0, 1.0, size=5)
    return (
        float(effect.gamma ** (s * j[0])),
        float(1.0 - s * j[1] * (1.0 - effect.contrast)),
        float(s * j[2] * effect.haze),
        float(s * j[3] * effect.blur),
        float(s * j[4] * effect.noise),
    )


def _apply_quality(
    x: np.ndarray, params: tuple[float, float, float, float, float], rng: np.random.Generator, scale: float
) -> np.ndarray:
    """Apply ``(gamma, contrast, haze, blur, noise)`` from :func:`_quality_params` to ``x`` in [0, 1] (blur in px at
    64 px, multiplied by ``scale``); noise from ``rng``."""
    gamma, contrast, haze, blur, noise = params
    x = haze + contrast * gamma_contrast(x, gamma)
    x = gaussian_blur(np.clip(x, 0.0, 1.0), blur * scale)
    return gaussian_noise(x, noise, rng)


def simulate_iqad_sample(
    dataset: str,
    diagnosis: int,
    quality: int,
    rng: np.random.Generator | int | None = None,
    image_size: int = 64,
    noise_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one IQAD demo image and its lesion-free twin (same base, same degradation, same noise).

    The base image and the lesions are drawn from ``rng`` BEFORE the quality parameters, so the same seed gives the
    same lesioned scene at every quality grade (the best grade is the undegraded scene).

    Args:
        dataset: one of ``IQAD_DEMO_DATASETS``.
        diagnosis: diagnosis grade in ``[0, num_diagnosis)`` (0 = no lesion).
        quality: quality grade in ``[0, num_quality)`` (highest = best = undegraded).
        rng: numpy Generator or seed.
        image_size: side of the square image.
        noise_seed: seed of the degradation noise (default: drawn from ``rng``); another value gives the same scene
            and degradation parameters with an independent noise realisation.

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
    params = _quality_params(spec.effect, spec.num_quality, quality, rng)
    drawn = int(rng.integers(0, 2**31 - 1))
    noise_seed = drawn if noise_seed is None else int(noise_seed)
    outs = []
    for x in (img, clean):
        x = _apply_quality(x, params, np.random.default_rng(noise_seed), image_size / 64.0)
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


def _split_sizes(
    key: str,
    num_pairs: int,
    num_images: int | None,
    split_fractions: tuple[float, float],
    sizes: tuple[int | None, int | None, int | None],
) -> dict[str, int]:
    """Images per split (``training``, ``validation``, ``test``) from explicit sizes or from a total and fractions.

    Raises:
        ValueError: both or incomplete specifications, or too few images for every pair in every split.
    """
    if any(n is not None for n in sizes):
        if num_images is not None or any(n is None for n in sizes):
            raise ValueError(f"{key}: give num_train, num_val and num_test together, and not with num_images.")
        out = dict(zip(("training", "validation", "test"), (int(n) for n in sizes)))  # type: ignore[arg-type]
        small = {k: n for k, n in out.items() if n < num_pairs}
        if small:
            raise ValueError(
                f"{key}: every split needs >= {num_pairs} images (one per (diagnosis, quality) pair), got {small}."
            )
        return out
    num_images = 20 * num_pairs if num_images is None else int(num_images)
    if num_images < 3 * num_pairs:
        raise ValueError(f"{key}: num_images must be >= {3 * num_pairs} (3 per (diagnosis, quality) pair).")
    val_frac, test_frac = split_fractions
    if val_frac <= 0 or test_frac <= 0 or val_frac + test_frac >= 1:
        raise ValueError(f"split_fractions must be positive and sum to < 1, got {split_fractions}.")
    per_pair = num_images // num_pairs
    n_val = max(1, int(round(val_frac * per_pair)))
    n_test = max(1, int(round(test_frac * per_pair)))
    val, test = n_val * num_pairs, n_test * num_pairs
    return {"training": num_images - val - test, "validation": val, "test": test}


def make_iqad_demo_data(
    out_dir: str | os.PathLike,
    dataset: str,
    seed: int = 0,
    num_images: int | None = None,
    image_size: int = 64,
    split_fractions: tuple[float, float] = (0.2, 0.2),
    num_train: int | None = None,
    num_val: int | None = None,
    num_test: int | None = None,
) -> Path:
    """Build one quality-aware diagnosis demo (MKCNet) under ``out_dir`` and return the datalist path.

    Every split is balanced over the ``num_diagnosis * num_quality`` (diagnosis, quality) pairs (a size that is not a
    multiple of the pair count gives its remainder to the first pairs, quality-major), so each split holds every
    pair. The sizes are ``num_train`` / ``num_val`` / ``num_test`` (all three), or else ``num_images`` split
    ``1 - val - test : val : test`` per pair by ``split_fractions``. Diagnosis comes from simulated lesions, quality
    from a grade-dependent degradation applied after them (:func:`simulate_iqad_sample`, ``docs/demo_data.md``).

    Args:
        out_dir: output folder (created): ``images/NNNN.png`` and ``datalist.json``; files are overwritten.
        dataset: ``"eyeq"``, ``"deepdr"``, ``"drac"``, ``"iqad_ct"`` or ``"iqad_cxr"``.
        seed: random seed; the same seed gives byte-identical files.
        num_images: total number of images when no split sizes are given (default ``20 * num_diagnosis *
            num_quality``); at least 3 per pair.
        image_size: side of the square images (e.g. 64 or 128).
        split_fractions: (validation, test) fractions of each pair with ``num_images`` (at least one image each).
        num_train: training images (at least one per pair); with ``num_val`` and ``num_test``.
        num_val: validation images (at least one per pair).
        num_test: test images (at least one per pair).

    Returns:
        Path of ``out_dir/datalist.json``.

    Raises:
        ValueError: unknown dataset, too few images, incomplete split sizes, bad size or fractions.
        RuntimeError: ``iqad_cxr`` without pydicom-data (``pip install pydicom-data``).
    """
    spec = _iqad_spec(dataset)
    key = str(dataset).strip().lower().replace("-", "_")
    pairs = [(d, q) for q in range(spec.num_quality) for d in range(spec.num_diagnosis)]
    sizes = _split_sizes(key, len(pairs), num_images, split_fractions, (num_train, num_val, num_test))
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}.")
    if spec.modality == "cxr" and sources.dicom_path("RG1_UNCR.dcm") is None:
        raise RuntimeError(
            "the iqad_cxr demo needs the real chest radiograph RG1_UNCR.dcm from pydicom-data: "
            f"`{sources.INSTALL_HINT}`."
        )
    out = Path(out_dir)
    # labels per image: every split balanced over the pairs
    jobs: list[tuple[int, int, str]] = []
    for split, size in sizes.items():
        base_n, extra = divmod(size, len(pairs))
        for p, (d, q) in enumerate(pairs):
            jobs += [(d, q, split)] * (base_n + (1 if p < extra else 0))
    digits = max(4, len(str(len(jobs) - 1)))
    order = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())]).permutation(len(jobs))
    sections: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    for index, j in enumerate(order):
        d, q, split = jobs[int(j)]
        img, _ = simulate_iqad_sample(key, d, q, item_rng(seed, key, index), image_size)
        rel = f"images/{index:0{digits}d}.png"
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
