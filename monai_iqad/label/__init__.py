"""monai_iqad.label."""

from __future__ import annotations
