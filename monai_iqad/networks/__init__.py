"""monai_iqad.networks."""

from __future__ import annotations
