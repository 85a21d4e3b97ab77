"""``python -m monai_iqad.data --out DIR [--dataset saqm|eyeq|deepdr|drac|iqad_ct|iqad_cxr|all]``: build demo data.

Kept for existing scripts: the same command line as ``python -m monai_iqad.demo`` (see
:func:`monai_iqad.demo.cli.main`). ``python -m monai_iqad.data pretrain-corpus OUT [--seed N] [--image-size N]``
builds the offline SAQM pretraining corpus (see :func:`monai_iqad.demo.pretrain_corpus.main`). This entry point is
not imported by the package, so ``data`` still imports nothing above it.
"""

from __future__ import annotations

import sys

from monai_iqad.demo.cli import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["pretrain-corpus"]:
        from monai_iqad.demo.pretrain_corpus import main as corpus_main

        raise SystemExit(corpus_main(sys.argv[2:]))
    raise SystemExit(main(prog="python -m monai_iqad.data"))
