"""monai_iqad.demo: small demo data sets built offline from real images shipped inside Python packages.

Nothing is downloaded and everything is deterministic for a seed (PNG files and datalists are byte-identical); see
``docs/demo_data.md``. One module per concern:

- :mod:`.sources`: the real images available offline (scikit-image data, pydicom / pydicom-data DICOM test files);
- :mod:`.saqm`: :func:`make_demo_data`, the SAQM domain-adaptation demo (natural images → ultrasound);
- :mod:`.renderers`: the IQAD scenes with simulated lesions for the four modalities (fundus, OCTA, CT, CR);
- :mod:`.iqad`: :func:`make_iqad_demo_data` / :func:`simulate_iqad_sample`, the MKCNet quality-aware diagnosis demos;
- :mod:`.cli`: ``python -m monai_iqad.demo --out DIR [--dataset saqm|eyeq|deepdr|drac|iqad_ct|iqad_cxr|all]``.

Layering: ``demo`` sits above ``data`` and ``transforms`` (it uses their datalist writer, dataset constants and
degradations) and below the bundles that build demo data on first run.
"""

from __future__ import annotations

from .cli import main
from .iqad import (
    IQAD_DEMO_DATASETS,
    IQAD_DEMO_DEGRADATIONS,
    IQAD_DEMO_QUALITY_NAMES,
    QualityEffect,
    make_iqad_demo_data,
    simulate_iqad_sample,
)
from .saqm import SOURCE_MOS_RANGE, TARGET_MOS_RANGE, make_demo_data, source_mos, target_mos
from .sources import NATURAL_IMAGES, available_sources

__all__ = [
    "NATURAL_IMAGES",
    "IQAD_DEMO_DATASETS",
    "IQAD_DEMO_DEGRADATIONS",
    "IQAD_DEMO_QUALITY_NAMES",
    "QualityEffect",
    "SOURCE_MOS_RANGE",
    "TARGET_MOS_RANGE",
    "available_sources",
    "source_mos",
    "target_mos",
    "make_demo_data",
    "make_iqad_demo_data",
    "simulate_iqad_sample",
    "main",
]
