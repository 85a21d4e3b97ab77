"""monai_iqad.handlers: Ignite handlers, one concern per module."""

from __future__ import annotations

from .best_model_saver import BestModelSaver
from .checkpoint_loader import ResumeCheckpointLoader, TrainedModelLoader, find_checkpoint, require_model
from .checkpoint_saver import TrainingCheckpointSaver
from .classification_figures import ClassificationFiguresHandler
from .collector import EpochOutputCollector
from .csv_writer import PredictionCSVWriter
from .determinism import EpochSeedHandler
from .iqa_scatter import IQAScatterHandler
from .learning_rate import LearningRateLogger
from .nan_guard import NaNLossGuard
from .progress import ConsoleProgressBar
from .rank_filter import LOGGING_HANDLERS, for_this_rank
from .scalars import output_scalars
from .worst_images import WorstImagesHandler
