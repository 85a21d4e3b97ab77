"""monai_iqad: a MONAI plugin for medical image quality assessment (IQA) and quality-aware diagnosis (IQAD).

Subpackages: ``networks``, ``losses``, ``metrics``, ``data``, ``demo``, ``transforms``, ``engines``, ``handlers``,
``utils`` (imported here, as MONAI does) and ``label`` (the MONAI Label app, imported on demand: it needs
``monailabel``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import data, demo, engines, handlers, losses, metrics, networks, transforms, utils
