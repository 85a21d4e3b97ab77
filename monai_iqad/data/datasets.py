"""Per-dataset constants of the five MKCNet (IQAD) datasets, in one place.

Bundles, the pipelines in :mod:`monai_iqad.transforms.modality` and the MONAI Label app read :data:`IQAD_DATASETS`.
Numbers come from the official MKCNet code (chehx/MKCNet ``configs/datasets/*.yaml``; see
``specs/mkcnet.md`` §2.6 and §3): class counts, ``k`` (``META_LENGTH``), channels, normalisation mean/std. The official
training recipe (batch size, epochs, learning rates, λ_R...) is not a data-set fact: it lives in each MKCNet bundle's
``configs/train.json`` (rendered by ``scripts/render_bundles.py``, which also reads this table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["IQADDatasetInfo", "IQAD_DATASETS", "get_dataset_info", "remap_dr_grade"]


@dataclass(frozen=True)
class IQADDatasetInfo:
    """Constants of one image-quality-aware-diagnosis dataset (MKCNet, CVPR 2023).

    Attributes:
        name: key in :data:`IQAD_DATASETS` (``"eyeq"``...).
        official_name: the dataset name in the official code (``"EYEQ"``...).
        folder_names: folder names accepted for the dataset root (the official repo ships ``IQAD-CT`` split files but
            its loader wants ``IQAD_CT``).
        modality: ``"fundus"``, ``"octa"``, ``"ct"`` or ``"cxr"``; selects the modality pipeline.
        num_diagnosis: diagnosis classes (``NUM_T``).
        num_quality: quality classes (``NUM_IQ``).
        k: auxiliary sub-classes per joint (diagnosis, quality) class (``META_LENGTH``).
        diagnosis_names: one name per diagnosis class.
        quality_names: one name per quality class (index 0 = lowest quality).
        channels: network input channels (3 for fundus RGB, 1 otherwise).
        mean: per-channel normalisation mean, on [0, 1] intensities.
        std: per-channel normalisation std, on [0, 1] intensities.
        spatial_size: network input size (rows, cols).
        remap_dr: split files hold DR grades 0-4, remapped to 0 / {1,2,3} / 4 → 0 / 1 / 2.
        f1_average: ``"macro"`` (multi-class) or ``"binary"`` (positive class 1), as in the official evaluation.
        train_size: size of the official training split.
        window: default CT window ``(center, width)`` in HU for DICOM/NIfTI input (CT only).
    """

    name: str
    official_name: str
    folder_names: tuple[str, ...]
    modality: str
    num_diagnosis: int
    num_quality: int
    k: int
    diagnosis_names: tuple[str, ...]
    quality_names: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    f1_average: str
    train_size: int
    remap_dr: bool = False
    spatial_size: tuple[int, int] = (256, 256)
    window: tuple[float, float] | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.diagnosis_names) != self.num_diagnosis or len(self.quality_names) != self.num_quality:
            raise ValueError(f"{self.name}: class names do not match num_diagnosis/num_quality")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{self.name}: mean/std need one value per channel ({self.channels})")

    @property
    def num_joint(self) -> int:
        """Joint (quality, diagnosis) classes: ``num_diagnosis * num_quality`` (``NUM_M``)."""
        return self.num_diagnosis * self.num_quality

    @property
    def num_auxiliary(self) -> int:
        """Length of the auxiliary vector y_ω: ``num_diagnosis * num_quality * k``."""
        return self.num_joint * self.k

    def joint_label(self, diagnosis: int, quality: int) -> int:
        """Joint label ``quality * num_diagnosis + diagnosis`` (quality-major, as in the official code)."""
        return int(quality) * self.num_diagnosis + int(diagnosis)


_DR3 = ("no DR", "NPDR", "PDR")

IQAD_DATASETS: dict[str, IQADDatasetInfo] = {
    "deepdr": IQADDatasetInfo(
        name="deepdr",
        official_name="DEEPDR",
        folder_names=("DEEPDR", "DeepDR", "deepdr", "DeepDRiD"),
        modality="fundus",
        num_diagnosis=3,
        num_quality=2,
        k=7,
        diagnosis_names=_DR3,
        quality_names=("not gradable", "good"),
        channels=3,
        mean=(0.3771, 0.2320, 0.1395),
        std=(0.1252, 0.0857, 0.0814),
        f1_average="macro",
        train_size=1200,
        remap_dr=True,
    ),
    "drac": IQADDatasetInfo(
        name="drac",
        official_name="DRAC",
        folder_names=("DRAC", "drac", "DRAC2022"),
        modality="octa",
        num_diagnosis=3,
        num_quality=2,
        k=10,
        diagnosis_names=("normal", "NPDR", "PDR"),
        quality_names=("poor", "good"),
        channels=1,
        mean=(0.4134,),
        std=(0.0595,),
        f1_average="macro",
        train_size=611,
    ),
    "eyeq": IQADDatasetInfo(
        name="eyeq",
        official_name="EYEQ",
        folder_names=("EYEQ", "EyeQ", "eyeq"),
        modality="fundus",
        num_diagnosis=3,
        num_quality=3,
        k=5,
        diagnosis_names=_DR3,
        quality_names=("reject", "usable", "good"),
        channels=3,
        mean=(0.4021, 0.2667, 0.1847),
        std=(0.2991, 0.2090, 0.1680),
        f1_average="macro",
        train_size=17274,
        remap_dr=True,
    ),
    "iqad_ct": IQADDatasetInfo(
        name="iqad_ct",
        official_name="IQAD_CT",
        folder_names=("IQAD_CT", "IQAD-CT", "iqad_ct", "iqad-ct"),
        modality="ct",
        num_diagnosis=2,
        num_quality=2,
        k=5,
        diagnosis_names=("non-COVID", "COVID"),
        # q0 = COVID-CT figures taken from papers, q1 = SARS-CoV-2 CT-scan dataset images (source quality)
        quality_names=("low (paper figures)", "high (CT scans)"),
        channels=1,
        mean=(0.6269,),
        std=(0.2909,),
        f1_average="binary",
        train_size=1641,
        window=(-600.0, 1500.0),  # lung window for HU input (COVID-19 lesions); PNG slices are not windowed
    ),
    "iqad_cxr": IQADDatasetInfo(
        name="iqad_cxr",
        official_name="IQAD_CXR",
        folder_names=("IQAD_CXR", "IQAD-CXR", "iqad_cxr", "iqad-cxr"),
        modality="cxr",
        num_diagnosis=2,
        num_quality=3,
        k=7,
        diagnosis_names=("normal", "pneumonia"),
        # q0/q1 = the two halves of the Kermany pediatric set (one presumably degraded), q2 = NIH ChestX-ray14
        quality_names=("pediatric half 0", "pediatric half 1", "NIH"),
        channels=1,
        mean=(0.4813,),
        std=(0.2361,),
        f1_average="binary",
        train_size=5796,
    ),
}


def get_dataset_info(name: str | IQADDatasetInfo) -> IQADDatasetInfo:
    """Look a dataset up by key or by any accepted folder/official name (``"EYEQ"``, ``"IQAD-CT"``...).

    Raises:
        KeyError: unknown dataset, listing the known keys.
    """
    if isinstance(name, IQADDatasetInfo):
        return name
    key = str(name).strip().lower().replace("-", "_")
    if key in IQAD_DATASETS:
        return IQAD_DATASETS[key]
    for info in IQAD_DATASETS.values():
        if key in (n.lower().replace("-", "_") for n in info.folder_names):
            return info
    raise KeyError(f"unknown IQAD dataset {name!r}; known: {sorted(IQAD_DATASETS)}")


def remap_dr_grade(grade: int) -> int:
    """DR grade 0-4 → 3 classes as in MKCNet: 0 → 0 (no DR), 1/2/3 → 1 (NPDR), 4 → 2 (PDR).

    Raises:
        ValueError: grade outside 0..4.
    """
    grade = int(grade)
    if not 0 <= grade <= 4:
        raise ValueError(f"DR grade must be in 0..4, got {grade}")
    return 0 if grade == 0 else (2 if grade == 4 else 1)
