"""Modality planes (ModalityChannels / ModalityChannelsd) and their use in ``saqm_preprocessing``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dicom_files import dicom_file
from monai.data import MetaTensor
from PIL import Image

from monai_iqad.transforms import (
    SAQM_MODALITIES,
    LoadImage2Dd,
    ModalityChannels,
    ModalityChannelsd,
    modality_index,
    saqm_preprocessing,
)


def test_modality_index_aliases_and_unknown():
    assert SAQM_MODALITIES == ("CR", "CT", "MR", "US", "fundus", "natural")
    assert modality_index("CT", SAQM_MODALITIES) == 1
    assert modality_index("dx", SAQM_MODALITIES) == 0  # DICOM DX reads as CR, case-insensitive
    assert modality_index("OP", SAQM_MODALITIES) == 4
    assert modality_index("Fundus", SAQM_MODALITIES) == 4
    assert modality_index("NM", SAQM_MODALITIES) is None
    assert modality_index("", SAQM_MODALITIES) is None and modality_index(None, SAQM_MODALITIES) is None


def test_modality_channels_values_and_meta():
    img = MetaTensor(torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4), meta={"tag": 7})
    out = ModalityChannels(("A", "B", "C"))(img, "b")
    assert isinstance(out, MetaTensor) and out.meta["tag"] == 7
    assert out.shape == (5, 3, 4) and out.dtype == torch.float32
    assert torch.equal(out[:2], img.as_tensor())
    assert torch.equal(out[2:].amax(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(out[2:].amin(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]))  # constant planes
    unknown = ModalityChannels(("A", "B", "C"))(img.as_tensor(), "D")
    assert not isinstance(unknown, MetaTensor) and torch.count_nonzero(unknown[2:]) == 0
    with pytest.raises(ValueError, match="at least one"):
        ModalityChannels(())


def test_modality_channels_dict_key_then_dicom_meta():
    t = ModalityChannelsd("image", modalities=("CT", "US"))
    img = MetaTensor(torch.zeros(1, 4, 4), meta={"modality": "US"})
    assert torch.equal(t({"image": img, "modality": "CT"})["image"][1:, 0, 0], torch.tensor([1.0, 0.0]))
    assert torch.equal(t({"image": img})["image"][1:, 0, 0], torch.tensor([0.0, 1.0]))  # from the image meta
    assert torch.count_nonzero(t({"image": torch.zeros(1, 4, 4)})["image"]) == 0  # no key, no meta: unknown


def test_modality_from_a_real_dicom_file():
    path = dicom_file("CT_small.dcm")
    d = ModalityChannelsd("image")(LoadImage2Dd("image")({"image": path}))
    assert d["image"].shape[0] == 1 + len(SAQM_MODALITIES)
    assert torch.equal(d["image"][1:].amax(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))


def test_saqm_preprocessing_appends_planes_after_normalisation(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)).save(path)
    plain = saqm_preprocessing(train=False)({"image": str(path)})["image"]
    cond = saqm_preprocessing(train=False, modalities=SAQM_MODALITIES)({"image": str(path), "modality": "MR"})
    assert plain.shape == (3, 40, 48) and cond["image"].shape == (9, 40, 48)
    assert torch.allclose(cond["image"][:3], plain)  # the image channels are untouched by the planes
    assert torch.equal(cond["image"][3:].amax(dim=(1, 2)), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    patches = saqm_preprocessing(train=True, num_patches=2, modalities=SAQM_MODALITIES)(
        {"image": str(path), "modality": "US"}
    )
    assert len(patches) == 2 and all(p["image"].shape == (9, 32, 32) for p in patches)
    assert all(float(p["image"][6].min()) == 1.0 for p in patches)


def test_modalities_forced_to_unknown():
    """``unknown``: a listed modality keeps its plane slot but is always encoded as unknown (all zero), by name or
    DICOM code; the others keep their one-hot plane; the dict transform and ``saqm_preprocessing`` pass it on."""
    img = torch.zeros(1, 2, 2)
    t = ModalityChannels(SAQM_MODALITIES, unknown=("US",))
    assert torch.count_nonzero(t(img, "US")) == 0 and torch.count_nonzero(t(img, "us")) == 0
    assert torch.equal(t(img, "CT")[1:, 0, 0], torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))
    by_code = ModalityChannels(SAQM_MODALITIES, unknown="DX")  # DX is an alias of CR: CR becomes unknown
    assert torch.count_nonzero(by_code(img, "CR")) == 0 and torch.count_nonzero(by_code(img, "MR")) == 4
    assert ModalityChannels(SAQM_MODALITIES, unknown=("NM",)).unknown == set()  # no plane: already unknown
    assert (t.plane_of("US"), t.plane_of("CT"), t.plane_of("NM"), t.plane_of(None)) == (None, 1, None, None)
    d = ModalityChannelsd("image", unknown=("US",))({"image": img, "modality": "US"})
    assert d["image"].shape == (7, 2, 2) and torch.count_nonzero(d["image"]) == 0
    path = dicom_file("CT_small.dcm")
    pre = saqm_preprocessing(train=False, modalities=SAQM_MODALITIES, unknown_modalities=["CT"])
    assert torch.count_nonzero(pre({"image": path})["image"][3:]) == 0  # CT from the DICOM header, forced unknown
    keep = saqm_preprocessing(train=False, modalities=SAQM_MODALITIES)({"image": path})["image"]
    assert float(keep[4].min()) == 1.0
