"""monai_iqad.networks.blocks."""

from __future__ import annotations

from .cbam import CBAM, ChannelGate, SpatialGate
from .global_attention import GlobalAttentionBlock
from .gradient_reversal import GradientReversal, GradientReversalFunction, dann_lambda
from .meta_knowledge_assistance import MetaKnowledgeAssistanceBlock
from .self_attention import SelfAttention2d
