"""monai_iqad.data."""

from __future__ import annotations
