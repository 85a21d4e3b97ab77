"""monai_iqad.data.converters: public dataset layouts → MONAI datalists (one module per layout).

CLI: ``python -m monai_iqad.data.converters {tid2013,md72,eyeq,deepdr,drac,iqad_ct,iqad_cxr} --root ... --out ...``.
"""

from __future__ import annotations

from .common import ConversionError, convert_mkcnet_splits, read_mkcnet_split
from .deepdr import convert_deepdr, read_deepdr_csv
from .drac import convert_drac
from .eyeq import convert_eyeq, read_eyeq_labels
from .iqad_ct import convert_iqad_ct
from .iqad_cxr import convert_iqad_cxr
from .md72 import convert_md72, read_mos_csv
from .tid2013 import convert_tid2013, read_tid2013_mos

__all__ = [
    "ConversionError",
    "convert_deepdr",
    "convert_drac",
    "convert_eyeq",
    "convert_iqad_ct",
    "convert_iqad_cxr",
    "convert_md72",
    "convert_mkcnet_splits",
    "convert_tid2013",
    "read_deepdr_csv",
    "read_eyeq_labels",
    "read_mkcnet_split",
    "read_mos_csv",
    "read_tid2013_mos",
]
