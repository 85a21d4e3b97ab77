"""Channel/intensity/label transforms, CT window, fundus FOV crop and the two preprocessing pipelines."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from dicom_files import dicom_file
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, MetaTensor
from PIL import Image

from monai_iqad.data import IQAD_DATASETS
from monai_iqad.transforms import (
    CTIntensityd,
    EnsureChannels,
    EnsureChannelsd,
    FundusFOVCrop,
    FundusFOVCropd,
    HUWindow,
    HUWindowd,
    InvertMonochrome1d,
    LoadImage2Dd,
    LocalContrastNormalize,
    NormalizeMOSd,
    ScaleByBitDepth,
    iqad_preprocessing,
    saqm_preprocessing,
)


def _root_cause(exc: BaseException) -> BaseException:
    """MONAI's Compose wraps transform errors in RuntimeError('applying transform ...'); return the original."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _mt(array, **meta) -> MetaTensor:
    return MetaTensor(torch.as_tensor(np.asarray(array, dtype=np.float32)), meta=meta)


# ----------------------------------------------------------------------------------------------- channels


def test_ensure_channels_replicate_luminance_and_gray_then_replicate():
    gray = _mt(np.arange(6).reshape(1, 2, 3))
    assert torch.equal(EnsureChannels(3)(gray), gray.repeat(3, 1, 1))
    rgb = np.stack([np.full((2, 3), 100.0), np.full((2, 3), 50.0), np.full((2, 3), 10.0)])
    luma = 0.299 * 100 + 0.587 * 50 + 0.114 * 10
    out = EnsureChannels(1)(_mt(rgb))
    assert out.shape == (1, 2, 3) and torch.allclose(out, torch.full((1, 2, 3), luma))
    out = EnsureChannels(3, source_to_gray=True)(_mt(rgb))
    assert out.shape == (3, 2, 3) and torch.allclose(out, torch.full((3, 2, 3), luma))
    assert out.meta["photometric_interpretation"] == "MONOCHROME2"
    np.testing.assert_array_equal(EnsureChannels(3)(rgb), rgb)  # numpy in, numpy out


@pytest.mark.parametrize("channels", [2, 4])
def test_ensure_channels_bad_count_names_file(channels):
    img = _mt(np.zeros((channels, 4, 4)), filename_or_obj="/data/scan_017.png")
    with pytest.raises(ValueError, match=rf"/data/scan_017.png: unsupported number of channels {channels}"):
        EnsureChannels(3)(img)
    with pytest.raises(ValueError, match="scan_017.png"):
        EnsureChannelsd("image", num_channels=1)({"image": img})


# ----------------------------------------------------------------------------------------------- intensity


def test_scale_by_bit_depth_is_fixed_not_min_max():
    assert torch.allclose(ScaleByBitDepth()(_mt([[[0, 51, 255]]])), torch.tensor([[[0.0, 0.2, 1.0]]]))
    dim = _mt([[[10, 20]]], bits_stored=8)  # a dark image stays dark (min-max would stretch it to [0, 1])
    assert torch.allclose(ScaleByBitDepth()(dim), torch.tensor([[[10 / 255, 20 / 255]]]))
    assert torch.allclose(ScaleByBitDepth()(_mt([[[32767.0]]], bits_stored=15)), torch.ones(1, 1, 1))
    assert torch.allclose(ScaleByBitDepth()(_mt([[[65535.0]]], bits_stored=16)), torch.ones(1, 1, 1))
    rescaled = _mt([[[-1024.0, 3071.0]]], bits_stored=12, rescale={"slope": 1.0, "intercept": -1024.0})
    assert torch.allclose(ScaleByBitDepth()(rescaled), torch.tensor([[[0.0, 1.0]]]))
    with pytest.raises(ValueError, match="unknown stored bit depth"):
        ScaleByBitDepth()(_mt([[[1.0]]], rescale={"slope": 2.0, "intercept": 0.0}, filename_or_obj="f.nii"))


def test_invert_monochrome1(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    d = InvertMonochrome1d("image")(LoadImage2Dd("image")({"image": str(tmp_path / "m1.dcm")}))
    hi = 2 ** int(ds.BitsStored) - 1  # MR_small is signed (PixelRepresentation 1): range -2^15..2^15-1
    if int(ds.PixelRepresentation) == 1:
        expected = -(2.0 ** (int(ds.BitsStored) - 1)) + (2.0 ** (int(ds.BitsStored) - 1) - 1) - ds.pixel_array
    else:
        expected = hi - ds.pixel_array
    np.testing.assert_allclose(d["image"][0].numpy(), expected)
    assert d["image"].meta["photometric_interpretation"] == "MONOCHROME2"
    again = InvertMonochrome1d("image")(d)  # never inverted twice
    assert torch.equal(again["image"], d["image"])
    mono2 = {"image": _mt(np.ones((1, 2, 2)), photometric_interpretation="MONOCHROME2")}
    assert torch.equal(InvertMonochrome1d("image")(mono2)["image"], mono2["image"])


def test_real_cr_inverted_then_scaled():
    path = dicom_file("RG1_UNCR.dcm")
    d = InvertMonochrome1d("image")(LoadImage2Dd("image")({"image": path}))
    raw = pydicom.dcmread(path).pixel_array
    assert float(d["image"][0, 0, 0]) == 32767 - float(raw[0, 0])
    scaled = ScaleByBitDepth()(d["image"])
    assert 0.0 <= float(scaled.min()) and float(scaled.max()) <= 1.0


def test_normalize_mos():
    t = NormalizeMOSd(mos_range=(0, 9))
    assert float(t({"mos": 4.5})["mos"]) == pytest.approx(0.5)
    assert t({"mos": 4.5})["mos"].dtype == torch.float32
    assert torch.isnan(t({"mos": float("nan")})["mos"])
    assert float(t({"mos": 9.3})["mos"]) == 1.0  # within the 5 % tolerance: clipped
    with pytest.raises(ValueError, match=r"img_42.bmp: MOS 70.0 outside mos_range"):
        t({"mos": 70.0, "image": "/tid/img_42.bmp"})
    with pytest.raises(ValueError, match="not a number"):
        t({"mos": "good", "image": "x.png"})


# ----------------------------------------------------------------------------------------------- CT / fundus


def test_hu_window_numbers():
    hu = torch.tensor([[[-1000.0, -160.0, 40.0, 240.0, 1000.0]]])
    out = HUWindow(window_center=40, window_width=400)(hu)
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0, 0.5, 1.0, 1.0]]]))
    lung = HUWindowd("image", window_center=-600, window_width=1500)({"image": torch.tensor([[[-600.0]]])})
    assert float(lung["image"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="window_width"):
        HUWindow(40, 0)


def test_ct_intensity_windows_dicom_but_scales_png(tmp_path):
    t = CTIntensityd("image", window_center=40, window_width=400)
    ct = t(LoadImage2Dd("image")({"image": dicom_file("CT_small.dcm")}))["image"]
    hu = LoadImage2Dd("image")({"image": dicom_file("CT_small.dcm")})["image"]
    assert torch.allclose(ct, ((hu + 160) / 400).clamp(0, 1))
    Image.fromarray(np.full((8, 8), 51, np.uint8)).save(tmp_path / "slice.png")
    png = t(LoadImage2Dd("image")({"image": str(tmp_path / "slice.png")}))["image"]
    assert torch.allclose(png, torch.full((1, 8, 8), 0.2))


def _fundus(h: int = 100, w: int = 140, radius: int = 40) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    disc = ((yy - 50) ** 2 + (xx - 70) ** 2) <= radius**2
    img = np.zeros((3, h, w), np.float32)
    img[0][disc], img[1][disc], img[2][disc] = 180, 90, 40
    img[:, 2:5, 2:12] = 255  # burnt-in text in a corner must not widen the box
    return img


def test_fundus_fov_crop_on_synthetic_disc():
    out = FundusFOVCrop()(_mt(_fundus()))
    assert abs(out.shape[1] - 81) <= 2 and abs(out.shape[2] - 81) <= 2  # the disc's 81×81 bounding box
    assert float(out[0].mean()) > 100
    dark = _mt(np.zeros((3, 30, 30)))
    assert FundusFOVCrop()(dark).shape == (3, 30, 30)  # nothing found: no crop
    d = FundusFOVCropd("image", margin=3)({"image": _mt(_fundus())})
    assert abs(d["image"].shape[1] - 87) <= 2


# ----------------------------------------------------------------------------------------------- pipelines


@pytest.fixture
def tiny_images(tmp_path):
    rgb = np.empty((24, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 128, 100, 50
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((24, 30), 120, np.uint8)).save(tmp_path / "gray.png")
    return tmp_path


@pytest.mark.parametrize("name", sorted(IQAD_DATASETS))
def test_iqad_preprocessing_each_dataset(tiny_images, name):
    info = IQAD_DATASETS[name]
    src = "rgb.png" if info.channels == 3 else "gray.png"
    out = iqad_preprocessing(name, train=True)(
        {"image": str(tiny_images / src), "diagnosis": info.num_diagnosis - 1, "quality": 0}
    )
    img = out["image"]
    assert tuple(img.shape) == (info.channels, 256, 256) and img.dtype == torch.float32
    raw = np.array([128, 100, 50]) / 255 if info.channels == 3 else np.array([120 / 255])
    expected = (raw - np.array(info.mean)) / np.array(info.std)
    np.testing.assert_allclose(img.mean(dim=(1, 2)).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert out["diagnosis"].dtype == torch.long and int(out["diagnosis"]) == info.num_diagnosis - 1
    assert img.meta["filename_or_obj"].endswith(src)


def test_iqad_preprocessing_dicom_inputs_and_label_errors(tiny_images):
    ct = iqad_preprocessing("iqad_ct")({"image": dicom_file("CT_small.dcm")})  # no labels needed at inference
    assert ct["image"].shape == (1, 256, 256)
    with pytest.raises(RuntimeError) as err:
        iqad_preprocessing("iqad_cxr")({"image": str(tiny_images / "gray.png"), "diagnosis": 0, "quality": 3})
    assert "gray.png: quality 3 out of range [0, 2]" in str(_root_cause(err.value))
    with pytest.raises(RuntimeError) as err:
        iqad_preprocessing("eyeq", train=True)({"image": str(tiny_images / "rgb.png")})
    assert "diagnosis" in str(_root_cause(err.value))
    batch = next(
        iter(
            DataLoader(
                Dataset(
                    [{"image": str(tiny_images / "rgb.png"), "diagnosis": 2, "quality": 1}] * 2,
                    iqad_preprocessing("deepdr"),
                ),
                batch_size=2,
            )
        )
    )
    assert batch["image"].shape == (2, 3, 256, 256) and batch["diagnosis"].tolist() == [2, 2]


def test_pipelines_from_bundle_config():
    parser = ConfigParser(
        {
            "imports": ["$import monai_iqad"],
            "expr": "$monai_iqad.transforms.iqad_preprocessing('eyeq', train=True)",
            "target": {"_target_": "monai_iqad.transforms.saqm_preprocessing", "train": False, "mos_range": [0, 9]},
        }
    )
    assert type(parser.get_parsed_content("expr")).__name__ == "Compose"
    assert type(parser.get_parsed_content("target")).__name__ == "Compose"


def test_saqm_train_patches_carry_normalised_mos(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    raw = saqm_preprocessing(train=True, local_contrast=False)
    samples = raw({"image": str(tmp_path / "i.png"), "mos": 6.3, "domain": "source"})
    assert isinstance(samples, list) and len(samples) == 32
    for s in samples:
        assert tuple(s["image"].shape) == (3, 32, 32) and float(s["mos"]) == pytest.approx(0.7)
        assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    full = saqm_preprocessing(train=False, channels=3)({"image": str(tmp_path / "i.png")})  # inference: no mos
    assert tuple(full["image"].shape) == (3, 80, 96)


def test_saqm_too_small_image_names_file(tmp_path):
    Image.fromarray(np.zeros((20, 40), np.uint8)).save(tmp_path / "thumb.png")
    with pytest.raises(RuntimeError) as err:
        saqm_preprocessing(train=True)({"image": str(tmp_path / "thumb.png"), "mos": 3.0})
    cause = str(_root_cause(err.value))
    assert "thumb.png" in cause and "smaller than the minimum (32, 32)" in cause


def test_local_contrast_normalisation_hand_computed():
    img = torch.tensor([[[0.0, 0.0, 0.0], [0.0, 0.9, 0.0], [0.0, 0.0, 0.0]]])
    out = LocalContrastNormalize(kernel_size=3, eps=0.1)(img)
    # centre window = the whole image: mean 0.1, E[x^2] = 0.09, std = sqrt(0.09 - 0.01)
    assert float(out[0, 1, 1]) == pytest.approx((0.9 - 0.1) / (0.08**0.5 + 0.1), rel=1e-5)
    flat = LocalContrastNormalize()(torch.full((2, 12, 12), 0.4))
    assert float(flat.abs().max()) < 1e-5  # no contrast, no signal
    lcn = saqm_preprocessing(train=False)  # LCN is the SAQM default: content luminance/contrast removed
    assert any(type(t).__name__ == "LocalContrastNormalized" for t in lcn.transforms)
    with pytest.raises(ValueError, match="odd"):
        LocalContrastNormalize(kernel_size=4)


def test_local_contrast_context_planes_hand_computed():
    # two channels; luminance = channel mean: centre window = the whole 3x3 image
    img = torch.zeros(2, 3, 3)
    img[0, 1, 1], img[1, 1, 1] = 0.9, 0.3  # luminance: 0.6 at the centre, 0 elsewhere
    out = LocalContrastNormalize(kernel_size=3, eps=0.1, context=True)(img)
    assert out.shape == (4, 3, 3)
    plain = LocalContrastNormalize(kernel_size=3, eps=0.1)(img)
    torch.testing.assert_close(out[:2], plain)  # the normalised channels are unchanged
    mean, sq = 0.6 / 9, 0.36 / 9
    assert float(out[2, 1, 1]) == pytest.approx(mean, rel=1e-5)
    assert float(out[3, 1, 1]) == pytest.approx((sq - mean**2) ** 0.5, rel=1e-5)
    # a gamma remap that LCN nearly hides is visible in the context planes
    ramp = torch.linspace(0.2, 0.8, 16).repeat(16, 1)[None].repeat(3, 1, 1)
    a, b = (LocalContrastNormalize(context=True)(x) for x in (ramp, ramp**3.2))
    assert float((a[3:] - b[3:]).abs().mean()) > 0.1
    assert float(b[3].mean()) < 0.6 * float(a[3].mean())  # darker on average
    pre = saqm_preprocessing(train=False, contrast_context=True, modalities=("CT", "MR"))
    x = pre({"image": dicom_file("CT_small.dcm")})["image"]
    assert x.shape[0] == 3 + 2 + 2  # image, context, modality planes (the DICOM says CT)
    assert float(x[5].min()) == 1.0 and float(x[6].max()) == 0.0
    with pytest.raises(ValueError, match="needs local_contrast"):
        saqm_preprocessing(train=False, local_contrast=False, contrast_context=True)
