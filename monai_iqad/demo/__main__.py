"""``python -m monai_iqad.demo --out DIR [--dataset saqm|eyeq|deepdr|drac|iqad_ct|iqad_cxr|all]``: build demo data."""

from __future__ import annotations

from monai_iqad.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
