"""monai_iqad.networks."""

from __future__ import annotations

from .blocks.cbam import CBAM, ChannelGate, SpatialGate
from .blocks.global_attention import GlobalAttentionBlock
from .blocks.gradient_reversal import GradientReversal, GradientReversalFunction, dann_lambda
from .blocks.meta_knowledge_assistance import MetaKnowledgeAssistanceBlock
from .blocks.self_attention import SelfAttention2d
from .nets.domain_classifier import DomainClassifier
from .nets.meta_learner import MetaLearner, joint_encoding_mask, masked_softmax
from .nets.mkcnet import MKCNet, MKCNetInference, VanillaNet
from .nets.saqm import SAQM
from .nets.saqm_ensemble import SAQMEnsemble
from .nets.saqm_router import SAQMRouter
from .nets.vgg import VGGEncoder
from .utils import average_state_dicts, frozen_copy, load_with_added_input_channels
