"""read_image / LoadImage2Dd on real DICOM files (pydicom, pydicom-data) and on PNG/TIFF/NIfTI written here."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_files import dicom_file
from monai.data import MetaTensor
from PIL import Image

from monai_iqad.data import ImageReadError, read_image
from monai_iqad.transforms import LoadImage2D, LoadImage2Dd

# ----------------------------------------------------------------------------------------------- DICOM


def test_multiframe_ybr_is_rgb_middle_frame_by_default():
    path = dicom_file("examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm")  # US cine, JPEG YBR_FULL_422
    n = int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)
    arr, meta = read_image(path)
    assert arr.dtype == np.float32 and arr.ndim == 3 and arr.shape[0] == 3
    assert meta["num_frames"] == n and meta["frame"] == n // 2
    assert meta["photometric_interpretation"] == "RGB" and meta["modality"] == "US"
    # gray ultrasound: after YBR -> RGB the three channels agree; raw YBR would have Cb, Cr ~ 128 everywhere
    assert np.abs(arr[0] - arr[1]).mean() < 2 and np.abs(arr[0] - arr[2]).mean() < 2
    first, meta0 = read_image(path, frame=0)
    assert meta0["frame"] == 0 and first.shape == arr.shape


def test_multiframe_frame_out_of_range_names_file_and_count():
    path = dicom_file("examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm")
    n = int(pydicom.dcmread(path, stop_before_pixels=True).NumberOfFrames)
    with pytest.raises(ImageReadError, match=rf"{n} frame") as err:
        read_image(path, frame=n)
    assert path in str(err.value)
    with pytest.raises(ImageReadError, match="out of range"):
        read_image(path, frame=-1)


def test_rgb_dicom():
    arr, meta = read_image(dicom_file("examples_rgb_color.dcm", "US1_UNCR.dcm", "SC_rgb.dcm"))
    assert arr.shape[0] == 3 and meta["photometric_interpretation"] == "RGB" and meta["bits_stored"] == 8
    assert 0 <= arr.min() and arr.max() <= 255


def test_palette_color_expanded_to_rgb():
    path = dicom_file("examples_palette.dcm", "OBXXXX1A.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    arr, meta = read_image(path)
    assert arr.shape == (3, ds.Rows, ds.Columns)
    assert meta["photometric_interpretation"] == "RGB"
    assert meta["original_photometric_interpretation"] == "PALETTE COLOR"
    assert meta["bits_stored"] == int(ds.RedPaletteColorLookupTableDescriptor[2])
    assert arr.max() <= 2 ** meta["bits_stored"] - 1 and not np.allclose(arr[0], arr[2])


def test_ct_modality_lut_gives_hounsfield_units():
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    arr, meta = read_image(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) == -1024
    np.testing.assert_allclose(arr[0], expected)
    assert meta["modality"] == "CT" and meta["rescale"]["intercept"] == -1024 and meta["rescale"]["type"] == "HU"
    assert meta["spacing"] == pytest.approx((0.661468, 0.661468))
    assert arr.shape == (1, 128, 128) and arr.dtype == np.float32


def test_dicom_without_suffix_dispatched_by_magic(tmp_path):
    target = tmp_path / "ct_slice_noext"
    shutil.copy(dicom_file("CT_small.dcm"), target)
    arr, meta = read_image(target)
    assert meta["format"] == "dicom" and arr.shape == (1, 128, 128)


def test_monochrome1_is_kept_and_flagged(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    arr, meta = read_image(path)
    np.testing.assert_array_equal(arr[0], ds.pixel_array)  # not inverted by the reader
    assert meta["photometric_interpretation"] == "MONOCHROME1" and meta["bits_stored"] == int(ds.BitsStored)


def test_real_monochrome1_chest_cr():
    path = dicom_file("RG1_UNCR.dcm")  # pydicom-data: chest CR 1955x1841, 15-bit MONOCHROME1
    arr, meta = read_image(path)
    assert arr.shape == (1, 1955, 1841)
    assert meta["photometric_interpretation"] == "MONOCHROME1" and meta["bits_stored"] == 15
    assert meta["modality"] == "CR" and meta["spacing"] is None  # PixelSpacing is 0\0 in this file
    assert arr.max() <= 2**15 - 1


def test_garbage_dcm_raises_naming_file(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"not a dicom at all " * 50)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_truncated_dicom_pixel_data(tmp_path):
    data = open(dicom_file("CT_small.dcm"), "rb").read()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: len(data) - 10000])
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------------------------- Pillow


def _gray(h: int = 12, w: int = 10, dtype=np.uint8, scale: int = 1) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * scale).astype(dtype)


@pytest.mark.parametrize(
    ("name", "make", "shape", "bits", "pi"),
    [
        ("g8.png", lambda: Image.fromarray(_gray()), (1, 12, 10), 8, "MONOCHROME2"),
        ("g16.png", lambda: Image.fromarray(_gray(dtype=np.uint16, scale=500)), (1, 12, 10), 16, "MONOCHROME2"),
        ("rgb.png", lambda: Image.fromarray(np.dstack([_gray()] * 3)), (3, 12, 10), 8, "RGB"),
        ("rgba.png", lambda: Image.fromarray(np.dstack([_gray()] * 4)), (3, 12, 10), 8, "RGB"),
        ("pal.png", lambda: Image.fromarray(np.dstack([_gray()] * 3)).convert("P"), (3, 12, 10), 8, "RGB"),
        ("la.png", lambda: Image.fromarray(np.dstack([_gray()] * 2)), (1, 12, 10), 8, "MONOCHROME2"),
        ("x.jpg", lambda: Image.fromarray(np.dstack([_gray()] * 3)), (3, 12, 10), 8, "RGB"),
        ("x.bmp", lambda: Image.fromarray(np.dstack([_gray()] * 3)), (3, 12, 10), 8, "RGB"),
        ("x16.tif", lambda: Image.fromarray(_gray(dtype=np.uint16, scale=300)), (1, 12, 10), 16, "MONOCHROME2"),
    ],
)
def test_pillow_formats(tmp_path, name, make, shape, bits, pi):
    path = tmp_path / name
    make().save(path)
    arr, meta = read_image(path)
    assert arr.shape == shape and arr.dtype == np.float32
    assert meta["bits_stored"] == bits and meta["photometric_interpretation"] == pi
    assert meta["filename_or_obj"] == str(path) and meta["original_channel_dim"] == 0


def test_png_values_kept_rows_first(tmp_path):
    g16 = _gray(dtype=np.uint16, scale=500)  # up to 59,500: 16-bit values must survive
    Image.fromarray(g16).save(tmp_path / "g16.png")
    arr, _ = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(arr[0], g16)
    rgb = np.dstack([_gray(), _gray() + 1, _gray() + 2])
    Image.fromarray(np.dstack([rgb, np.full((12, 10), 7, np.uint8)])).save(tmp_path / "rgba.png")
    arr, _ = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(arr, rgb.transpose(2, 0, 1))  # alpha dropped, (C, H, W)


def test_truncated_png_raises_naming_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    good = tmp_path / "good.png"
    Image.fromarray(noise).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError) as err:
        read_image(bad)
    assert str(bad) in str(err.value)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ImageReadError, match="not found") as err:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(err.value)
    odd = tmp_path / "data.xyz"
    odd.write_bytes(b"\x00" * 400)
    with pytest.raises(ImageReadError, match="unrecognised image format"):
        read_image(odd)


# ----------------------------------------------------------------------------------------------- NIfTI


def test_nifti_2d_rows_first_and_spacing(tmp_path):
    img = _gray(12, 10).astype(np.int16)
    nib.save(nib.Nifti1Image(img.T, np.diag([0.5, 0.7, 1.0, 1.0])), tmp_path / "s.nii.gz")  # (i, j) = (col, row)
    arr, meta = read_image(tmp_path / "s.nii.gz")
    np.testing.assert_array_equal(arr[0], img)
    assert meta["spacing"] == pytest.approx((0.7, 0.5)) and meta["format"] == "nifti"
    nib.save(nib.Nifti1Image(img.T[..., None], np.eye(4)), tmp_path / "s1.nii")  # (X, Y, 1)
    assert read_image(tmp_path / "s1.nii")[0].shape == (1, 12, 10)


def test_nifti_3d_needs_slice_index(tmp_path):
    vol = np.stack([_gray(12, 10).T + k for k in range(4)], -1).astype(np.float32)
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    with pytest.raises(ImageReadError, match="3D volume in a 2D pipeline: pass slice_index") as err:
        read_image(path)
    assert str(path) in str(err.value)
    arr, meta = read_image(path, slice_index=2)
    np.testing.assert_array_equal(arr[0], _gray(12, 10) + 2)
    assert meta["slice_index"] == 2 and meta["num_slices"] == 4
    with pytest.raises(ImageReadError, match="4 slice"):
        read_image(path, slice_index=4)


@pytest.mark.parametrize("name", ["junk.nii", "junk.nii.gz"])
def test_garbage_nifti_raises_naming_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------------------------- transforms


def test_load_image_2dd_metatensor_and_frame_key():
    path = dicom_file("examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm")
    out = LoadImage2Dd("image", image_only=False)({"image": path, "frame": 3, "mos": 2.0})
    img = out["image"]
    assert isinstance(img, MetaTensor) and img.shape[0] == 3 and img.dtype.is_floating_point
    assert img.meta["filename_or_obj"] == path and img.meta["frame"] == 3
    assert out["image_meta_dict"]["frame"] == 3 and out["mos"] == 2.0
    assert tuple(img.meta["spatial_shape"]) == tuple(img.shape[1:])


def test_load_image_2d_affine_from_spacing():
    img = LoadImage2D()(dicom_file("CT_small.dcm"))
    assert img.affine[0, 0].item() == pytest.approx(0.661468) and img.affine[2, 2].item() == 1.0
    assert img.meta["rescale"]["intercept"] == -1024


def test_enhanced_ct_rescale_from_functional_groups():
    path = dicom_file("eCT_Supplemental.dcm")  # pydicom-data: enhanced CT, 2 frames, rescale in functional groups
    arr, meta = read_image(path, frame=0)
    raw = pydicom.dcmread(path).pixel_array[0]
    np.testing.assert_allclose(arr[0], raw.astype(np.float64) - 1024)
    assert meta["rescale"]["type"] == "HU" and meta["spacing"] == pytest.approx((0.388672, 0.388672))
    assert meta["window"] == {"center": 49.0, "width": 102.0}
