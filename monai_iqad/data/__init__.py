"""monai_iqad.data: image reading, datalists, per-dataset constants and dataset converters."""

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
from .datalist import DatalistError, datalist_mos_range, list_images, load_datalist, split_items, write_datalist
from .datasets import IQAD_DATASETS, IQADDatasetInfo, get_dataset_info, remap_dr_grade
from .demo import available_sources, make_demo_data, make_iqad_demo_data
from .image_io import ImageReadError, read_image
from .samplers import EpochSampler
