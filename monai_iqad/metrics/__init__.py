"""monai_iqad.metrics."""

from __future__ import annotations
