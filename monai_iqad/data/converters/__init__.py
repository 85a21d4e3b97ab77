"""monai_iqad.data.converters."""

from __future__ import annotations
