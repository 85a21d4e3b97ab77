"""monai_iqad.transforms: loading, channel/intensity, modality transforms and preprocessing pipelines."""

from __future__ import annotations

from .conditioning import (
    MODALITY_ALIASES,
    SAQM_MODALITIES,
    ModalityChannels,
    ModalityChannelsd,
    modality_index,
)
from .degradations import (
    DEGRADATION_KINDS,
    SEVERITY_TABLE,
    Degrade,
    Degraded,
    RandDegrade,
    RandDegraded,
    contrast_reduction,
    degrade,
    denoise_artifacts,
    gaussian_blur,
    gaussian_noise,
    jpeg_compress,
    motion_blur,
    speckle_noise,
    uneven_illumination,
)
from .heads import SplitHeads, SplitHeadsd
from .intensity import (
    EnsureChannels,
    EnsureChannelsd,
    EnsureClassLabel,
    EnsureClassLabeld,
    InvertMonochrome1,
    InvertMonochrome1d,
    LocalContrastNormalize,
    LocalContrastNormalized,
    NormalizeMOS,
    NormalizeMOSd,
    RequireMinSize,
    RequireMinSized,
    ScaleByBitDepth,
    ScaleByBitDepthd,
)
from .io import LoadImage2D, LoadImage2Dd
from .modality import (
    CTIntensity,
    CTIntensityd,
    FundusFOVCrop,
    FundusFOVCropd,
    HUWindow,
    HUWindowd,
    iqad_preprocessing,
    saqm_preprocessing,
)
