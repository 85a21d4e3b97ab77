"""monai_iqad.losses."""

from __future__ import annotations
