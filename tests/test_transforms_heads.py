"""``SplitHeads`` / ``SplitHeadsd``: a dict of heads or a packed tensor to named keys, then MONAI postprocessing."""

from __future__ import annotations

import pytest
import torch
from monai.data import decollate_batch
from monai.transforms import Activationsd, AsDiscreted, Compose, CopyItemsd

from monai_iqad.networks import MKCNet, MKCNetInference
from monai_iqad.transforms import SplitHeads, SplitHeadsd


def test_split_dict_keeps_requested_heads_in_order():
    out = {"auxiliary": torch.zeros(6), "quality": torch.tensor([1.0, 2.0]), "diagnosis": torch.tensor([3.0])}
    heads = SplitHeads(["diagnosis", "quality"])(out)
    assert list(heads) == ["diagnosis", "quality"]
    assert heads["quality"] is out["quality"]
    with pytest.raises(KeyError, match="no head"):
        SplitHeads(["diagnosis", "quality"])({"diagnosis": torch.zeros(3)})
    assert list(SplitHeads(["diagnosis", "quality"], allow_missing_heads=True)({"diagnosis": torch.zeros(3)})) == [
        "diagnosis"
    ]


def test_split_packed_tensor_by_sizes():
    packed = torch.arange(10.0).reshape(2, 5)  # (B, 3 + 2)
    heads = SplitHeads({"diagnosis": 3, "quality": 2}, dim=1)(packed)
    assert torch.equal(heads["diagnosis"], packed[:, :3]) and torch.equal(heads["quality"], packed[:, 3:])
    item = SplitHeads({"diagnosis": 3, "quality": 2})(packed[1])  # decollated item (C,)
    assert item["quality"].tolist() == [8.0, 9.0]
    with pytest.raises(ValueError, match="need 4"):
        SplitHeads({"diagnosis": 3, "quality": 1})(packed[0])
    with pytest.raises(ValueError, match="sizes"):
        SplitHeads(["diagnosis", "quality"])(packed[0])
    with pytest.raises(ValueError, match="at least one"):
        SplitHeads([])


def test_mkcnet_heads_through_monai_postprocessing():
    """Decollated MKCNet dict output → named probabilities and class indices equal to softmax/argmax of the heads,
    and the packed ``MKCNetInference`` probabilities split into the same values."""
    torch.manual_seed(0)
    net = MKCNet(num_diagnosis=3, num_quality=2, aux_per_class=2, in_channels=1, width=0.0625).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = net(x)
        packed = MKCNetInference(net)(x)
    post = Compose(
        [
            SplitHeadsd(keys="pred", heads=["diagnosis", "quality"]),
            Activationsd(keys=["diagnosis_pred", "quality_pred"], softmax=True),
            CopyItemsd(keys=["diagnosis_pred", "quality_pred"], names=["diagnosis_class", "quality_class"]),
            AsDiscreted(keys=["diagnosis_class", "quality_class"], argmax=True),
        ]
    )
    items = [post(i) for i in decollate_batch({"pred": out})]
    split = [SplitHeadsd(keys="pred", heads={"diagnosis": 3, "quality": 2})({"pred": p}) for p in packed]
    for b, (item, other) in enumerate(zip(items, split)):
        for head in ("diagnosis", "quality"):
            probs = torch.softmax(out[head][b], 0)
            torch.testing.assert_close(item[f"{head}_pred"], probs)
            torch.testing.assert_close(other[f"{head}_pred"], probs)
            assert int(item[f"{head}_class"]) == int(probs.argmax())
        assert "auxiliary_pred" not in item and "pred" in item
