"""monai_iqad.networks.nets."""

from __future__ import annotations
