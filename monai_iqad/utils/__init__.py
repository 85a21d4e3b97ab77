"""monai_iqad.utils."""

from __future__ import annotations
