"""monai_iqad.handlers."""

from __future__ import annotations
