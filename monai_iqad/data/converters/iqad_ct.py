"""IQAD-CT (MKCNet): COVID-CT (UCSD-AI4H) + SARS-CoV-2 CT-scan images; quality = source data set.

Expected layout (the official MKCNet loader reads ``<root>/<NAME>/{train,val,test}.txt`` and opens
``<root>/<NAME>/<path in txt>``)::

    <root>/IQAD_CT/            (or IQAD-CT, the name of the repo's dataset_splits folder)
        train.txt  val.txt  test.txt     # "image_name,DR_label,IQ_label" header, rows "Images/<file>,<d>,<q>"
        Images/...

Diagnosis: 0 = non-COVID, 1 = COVID. Quality: 0 = COVID-CT (figures taken from papers), 1 = SARS-CoV-2 CT scans.
"""

from __future__ import annotations

from monai_iqad.data.converters.common import mkcnet_converter

__all__ = ["convert_iqad_ct"]

# convert_iqad_ct(root, out_path=None, split_dir=None, image_root=None, val_fraction=0.1, seed=0, check_files=True)
convert_iqad_ct = mkcnet_converter("iqad_ct", __name__)
