"""monai_iqad: a MONAI plugin for medical image quality assessment (IQA) and quality-aware diagnosis (IQAD).

Subpackages: ``networks``, ``losses``, ``metrics``, ``data``, ``transforms``, ``engines``, ``handlers`` and ``label``.
"""

__version__ = "0.1.0"
