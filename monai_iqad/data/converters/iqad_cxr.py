"""IQAD-CXR (MKCNet): Kermany pediatric CXR (two halves) + NIH ChestX-ray14 images.

Expected layout (the official MKCNet loader reads ``<root>/<NAME>/{train,val,test}.txt`` and opens
``<root>/<NAME>/<path in txt>``)::

    <root>/IQAD_CXR/            (or IQAD-CXR, the name of the repo's dataset_splits folder)
        train.txt  val.txt  test.txt     # "image_name,DR_label,IQ_label" header, rows "Images/<file>,<d>,<q>"
        Images/...

Diagnosis: 0 = normal, 1 = pneumonia. Quality: 0 and 1 = the two halves of the pediatric set, 2 = NIH images.
"""

from __future__ import annotations

from monai_iqad.data.converters.common import mkcnet_converter

__all__ = ["convert_iqad_cxr"]

# convert_iqad_cxr(root, out_path=None, split_dir=None, image_root=None, val_fraction=0.1, seed=0, check_files=True)
convert_iqad_cxr = mkcnet_converter("iqad_cxr", __name__)
