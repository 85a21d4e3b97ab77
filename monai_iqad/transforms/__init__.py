"""monai_iqad.transforms."""

from __future__ import annotations
