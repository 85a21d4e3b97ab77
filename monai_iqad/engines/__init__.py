"""monai_iqad.engines."""

from __future__ import annotations
