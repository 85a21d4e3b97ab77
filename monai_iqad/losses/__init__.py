"""monai_iqad.losses."""

from __future__ import annotations

from .distillation import BernoulliKLDivLoss
from .entropy import EntropyRegularizer
from .focal import FocalLoss
from .ranking import PairwiseRankingLoss, ladder_pairs
