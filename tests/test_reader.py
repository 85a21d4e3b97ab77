"""IQADImageReader: MONAI's ``LoadImage`` / ``LoadImaged`` over read_image (PNG, DICOM, NIfTI) and, with ITK,
MetaImage / NRRD; MONAI's axis order (x = column first) checked against MONAI's own readers."""

from __future__ import annotations

import importlib.util

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from dicom_files import dicom_file
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import LoadImage, LoadImaged
from monai.utils import OptionalImportError
from PIL import Image

import monai_iqad.data.reader as reader_module
from monai_iqad.data import ImageReadError, IQADImageReader, read_image

HAS_ITK = importlib.util.find_spec("itk") is not None


def _load(path, **kwargs) -> MetaTensor:
    return LoadImage(reader=IQADImageReader(**kwargs), image_only=True)(str(path))


def _gray(h: int = 12, w: int = 20) -> np.ndarray:
    """A (rows, cols) uint8 ramp whose value tells its position: 20 * row + col."""
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ PNG


def test_png_gray_follows_monai_axes_and_matches_pilreader(tmp_path):
    arr = _gray()
    Image.fromarray(arr).save(tmp_path / "g.png")
    img = _load(tmp_path / "g.png")
    assert isinstance(img, MetaTensor) and img.dtype == torch.float32
    assert tuple(img.shape) == (1, 20, 12)  # (C, W, H): x (column) first, like MONAI's readers
    np.testing.assert_array_equal(img[0].numpy(), arr.T)  # img[0][x, y] == pixel at row y, column x
    assert float(img[0, 3, 1]) == arr[1, 3]
    ref = LoadImage(reader="PILReader", image_only=True, ensure_channel_first=True)(str(tmp_path / "g.png"))
    torch.testing.assert_close(img.as_tensor(), ref.as_tensor().float())
    # the difference to read_image, which is rows first
    rows_first, _ = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(img.numpy(), np.swapaxes(rows_first, 1, 2))
    assert list(img.meta["spatial_shape"]) == [20, 12] and img.meta["original_channel_dim"] == 0
    torch.testing.assert_close(img.affine, torch.eye(3, dtype=torch.float64))


def test_png_rgb_channel_first(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = _load(tmp_path / "c.png")
    assert tuple(img.shape) == (3, 7, 9)
    np.testing.assert_array_equal(img.numpy(), rgb.transpose(2, 1, 0))
    ref = LoadImage(reader="PILReader", image_only=True, ensure_channel_first=True)(str(tmp_path / "c.png"))
    torch.testing.assert_close(img.as_tensor(), ref.as_tensor().float())


def test_verify_suffix():
    reader = IQADImageReader()
    assert reader.verify_suffix("a.png") and reader.verify_suffix(["a.DCM", "b.nii.gz", "c.jpeg"])
    assert not reader.verify_suffix("a.csv") and not reader.verify_suffix(["a.png", "b.txt"])
    assert reader.verify_suffix("a.mha") == HAS_ITK and reader.verify_suffix("a.nrrd") == HAS_ITK


# ------------------------------------------------------------------------------------------------ DICOM


def test_dicom_ct_in_hu_with_spacing_affine():
    path = dicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img = _load(path)
    assert tuple(img.shape) == (1, ds.Columns, ds.Rows)
    np.testing.assert_allclose(img[0].numpy(), hu.T, atol=1e-3)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    torch.testing.assert_close(img.affine, torch.diag(torch.tensor([col_mm, row_mm, 1.0], dtype=torch.float64)))
    np.testing.assert_allclose(img.meta["spacing"], [col_mm, row_mm])
    assert img.meta["modality"] == "CT" and img.meta["rescale_type"] == "HU"


def test_dicom_multiframe_frame_argument():
    path = dicom_file("examples_ybr_color.dcm", "color3d_jpeg_baseline.dcm")
    expected, _ = read_image(path, frame=0)
    img = _load(path, frame=0)
    assert tuple(img.shape) == (3, expected.shape[2], expected.shape[1]) and img.meta["frame"] == 0
    np.testing.assert_array_equal(img.numpy(), np.swapaxes(expected, 1, 2))


# ------------------------------------------------------------------------------------------------ NIfTI


def test_nifti_2d_keeps_file_axes_and_spacing(tmp_path):
    data = np.arange(5 * 8, dtype=np.int16).reshape(5, 8)  # NIfTI (i, j) = MONAI (x, y)
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 2.0, 1.0, 1.0])), tmp_path / "s.nii.gz")
    img = _load(tmp_path / "s.nii.gz")
    assert tuple(img.shape) == (1, 5, 8)
    np.testing.assert_array_equal(img[0].numpy(), data)
    ref = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)(str(tmp_path / "s.nii.gz"))
    np.testing.assert_array_equal(img.numpy(), ref.numpy().reshape(img.shape))
    torch.testing.assert_close(img.affine, torch.diag(torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)))


def test_nifti_volume_needs_slice_index(tmp_path):
    vol = np.random.default_rng(1).random((6, 4, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii")
    with pytest.raises(Exception, match="slice_index") as err:
        IQADImageReader().read(tmp_path / "v.nii")
    assert "v.nii" in str(err.value)
    img = _load(tmp_path / "v.nii", slice_index=2)
    np.testing.assert_array_equal(img[0].numpy(), vol[:, :, 2])


# ------------------------------------------------------------------------------------------------ pipelines


def test_loadimaged_dataloader_batch(tmp_path):
    files = []
    for i in range(2):
        Image.fromarray(_gray() + i).save(tmp_path / f"{i}.png")
        files.append({"image": str(tmp_path / f"{i}.png")})
    ds = Dataset(files, transform=LoadImaged("image", reader=IQADImageReader(), image_only=True))
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    assert tuple(batch["image"].shape) == (2, 1, 20, 12)
    np.testing.assert_array_equal(batch["image"][1, 0].numpy(), (_gray() + 1).T)


def test_several_files_stack_as_channels_and_shapes_must_agree(tmp_path):
    Image.fromarray(_gray()).save(tmp_path / "a.png")
    Image.fromarray(255 - _gray()).save(tmp_path / "b.png")
    Image.fromarray(_gray(5, 5)).save(tmp_path / "small.png")
    img = LoadImage(reader=IQADImageReader(), image_only=True)([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert tuple(img.shape) == (2, 20, 12)
    np.testing.assert_array_equal(img[1].numpy(), (255 - _gray()).T)
    reader = IQADImageReader()
    with pytest.raises(ImageReadError, match="small.png.*spatial shape"):
        reader.get_data(reader.read([tmp_path / "a.png", tmp_path / "small.png"]))


def test_bad_file_error_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        IQADImageReader().read(tmp_path / "broken.png")


# ------------------------------------------------------------------------------------------------ ITK formats


@pytest.mark.skipif(not HAS_ITK, reason='itk not installed (pip install "monai_iqad[itk]")')
@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats(tmp_path, suffix):
    import itk

    arr = _gray().astype(np.float32)
    image = itk.image_from_array(arr)  # numpy (rows, cols) -> ITK (x = cols, y = rows)
    image.SetSpacing([0.5, 2.0])
    itk.imwrite(image, str(tmp_path / f"g{suffix}"))
    img = _load(tmp_path / f"g{suffix}")
    assert tuple(img.shape) == (1, 20, 12)
    np.testing.assert_array_equal(img[0].numpy(), arr.T)  # same axes as the PNG of the same pixels
    # MONAI's ITKReader affine (LPS -> RAS flips x and y), spacing from the file
    np.testing.assert_allclose(np.abs(np.diag(img.affine.numpy())), [0.5, 2.0, 1.0])


def test_itk_formats_without_itk_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "_has_itk", lambda: False)
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    reader = IQADImageReader()
    assert not reader.verify_suffix("scan.mha")
    with pytest.raises(OptionalImportError, match=r"scan\.mha.*monai_iqad\[itk\]"):
        reader.read(tmp_path / "scan.mha")
