"""``python -m monai_iqad.data --out DIR [--dataset saqm|eyeq|deepdr|drac|iqad_ct|iqad_cxr|all]``: build demo data.

Same command line as ``python -m monai_iqad.data.demo`` (see :func:`monai_iqad.data.demo.main`).
"""

from __future__ import annotations

from monai_iqad.data.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
