"""Find real DICOM test files shipped with pydicom / pydicom-data without network access.

pydicom 3.x ships ``examples_*.dcm`` in its wheel; pydicom 2.4 only downloads them, and its ``get_testdata_file``
needs ``pkg_resources`` (gone from recent setuptools). So the wheel folders are searched directly first.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _folders() -> list[Path]:
    folders = []
    try:
        import pydicom.data

        folders.append(Path(pydicom.data.__file__).parent / "test_files")
    except ImportError:  # pragma: no cover
        pass
    try:
        import data_store  # pydicom-data

        folders.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    return folders


def dicom_file(*names: str) -> str:
    """Path of the first of ``names`` found locally; skips the test when none is installed."""
    for name in names:
        for folder in _folders():
            if (folder / name).is_file():
                return os.fspath(folder / name)
    for name in names:
        try:
            from pydicom.data import get_testdata_file

            path = get_testdata_file(name, download=False)
        except Exception:  # pydicom 2.4 without pkg_resources, or no external source
            path = None
        if path and Path(path).is_file():
            return os.fspath(path)
    pytest.skip(f"none of {names} is installed (pydicom / pydicom-data)")
