"""monai_iqad.networks.nets."""

from __future__ import annotations

from .domain_classifier import DomainClassifier
from .meta_learner import MetaLearner, joint_encoding_mask, masked_softmax
from .mkcnet import MKCNet, MKCNetInference, VanillaNet
from .saqm import SAQM
from .saqm_ensemble import SAQMEnsemble
from .saqm_router import SAQMRouter
from .vgg import VGGEncoder
