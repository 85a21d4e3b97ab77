"""monai_iqad.data: image reading, datalists, per-dataset constants and dataset converters.

The demo data builders moved to :mod:`monai_iqad.demo` (it sits above ``transforms``, whose degradations it uses).
"""

from __future__ import annotations

from .converters import (
    ConversionError,
    convert_deepdr,
    convert_drac,
    convert_eyeq,
    convert_iqad_ct,
    convert_iqad_cxr,
    convert_md72,
    convert_tid2013,
    read_mkcnet_split,
)
from .datalist import (
    DatalistError,
    EmptyDatalistError,
    datalist_mos_range,
    find_images,
    labelled_items,
    list_images,
    load_datalist,
    split_items,
    write_datalist,
)
from .datasets import IQAD_DATASETS, IQADDatasetInfo, get_dataset_info, remap_dr_grade
from .image_io import ImageReadError, read_image
from .reader import IQADImageReader
from .samplers import EpochSampler
from .screening import screen_images
