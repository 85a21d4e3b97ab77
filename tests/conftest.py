"""Shared pytest fixtures: deterministic seeds and a small thread count for the 2-core CI machine."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002  (legacy global state that MONAI transforms still draw from)
    torch.manual_seed(0)
    yield
