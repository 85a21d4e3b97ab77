"""monai_iqad.networks.blocks."""

from __future__ import annotations
