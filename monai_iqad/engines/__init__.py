"""monai_iqad.engines."""

from __future__ import annotations

from .domain_adaptation import DomainAdaptationTrainer
from .evaluator import MultiOutputEvaluator
from .meta_auxiliary import MetaAuxiliaryTrainer
from .multitask import MultiTaskTrainer, VanillaTrainer
from .prepare_batch import PrepareIQABatch, PrepareIQADBatch
from .step import training_step
from .tangent_replay import TangentReplay
from .utils import finite_metric_cmp
