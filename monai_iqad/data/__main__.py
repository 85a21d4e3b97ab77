"""``python -m monai_iqad.data --out DIR [--dataset saqm|eyeq|deepdr|drac|iqad_ct|iqad_cxr|all]``: build demo data.

Kept for existing scripts: the same command line as ``python -m monai_iqad.demo`` (see
:func:`monai_iqad.demo.cli.main`). This entry point is not imported by the package, so ``data`` still imports nothing
above it.
"""

from __future__ import annotations

from monai_iqad.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m monai_iqad.data"))
