"""MKCNet networks, blocks and losses: shapes, hand-computed values, official quirks, export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.func import functional_call

from monai_iqad.losses import EntropyRegularizer, FocalLoss
from monai_iqad.networks import (
    CBAM,
    MetaKnowledgeAssistanceBlock,
    MetaLearner,
    MKCNet,
    MKCNetInference,
    VanillaNet,
    VGGEncoder,
    joint_encoding_mask,
    masked_softmax,
)
from monai_iqad.networks.blocks import ChannelGate, GlobalAttentionBlock, SpatialGate

W = 1 / 16  # tiny widths: encoder channels (4, 8, 16, 32, 32), features 16


# ------------------------------------------------------------------------------------------------------------------
# joint-encoding mask and masked softmax
def test_joint_encoding_mask_values():
    mask = joint_encoding_mask(3, 2, 7)
    assert mask.shape == (6, 42)
    for i in range(6):
        row = mask[i]
        assert torch.all(row[i * 7 : (i + 1) * 7] == 1.0)
        outside = torch.cat((row[: i * 7], row[(i + 1) * 7 :]))
        assert torch.allclose(outside, torch.full_like(outside, 1e-8))
    hard = joint_encoding_mask(2, 2, 3, eps=0.0, dtype=torch.float64)
    assert hard.dtype == torch.float64
    assert torch.equal(hard.sum(1), torch.full((4,), 3.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        joint_encoding_mask(2, 2, 0)


@pytest.mark.parametrize(
    "name, nd, nq, k, expected",
    [
        ("DEEPDR", 3, 2, 7, 42),
        ("DRAC", 3, 2, 10, 60),
        ("EYEQ", 3, 3, 5, 45),
        ("IQAD_CT", 2, 2, 5, 20),
        ("IQAD_CXR", 2, 3, 7, 42),
    ],
)
def test_auxiliary_sizes_per_dataset(name, nd, nq, k, expected):
    assert joint_encoding_mask(nd, nq, k).shape == (nd * nq, expected)
    assert MKCNet(nd, nq, k, width=W).aux_classes == expected
    meta = MetaLearner(nd, nq, k, in_channels=1, width=W)
    assert meta.aux_classes == expected
    y = meta(torch.randn(2, 1, 32, 32), torch.tensor([0, nd - 1]), torch.tensor([nq - 1, 0]))
    assert y.shape == (2, expected), name


def test_masked_softmax_stable_and_exact():
    mask = joint_encoding_mask(2, 2, 3)[torch.tensor([0, 3])]
    small = torch.randn(2, 12, dtype=torch.float64)
    naive = torch.exp(small) * mask.double() / torch.sum(torch.exp(small) * mask.double(), dim=1, keepdim=True)
    assert torch.allclose(masked_softmax(small, mask), naive, rtol=1e-12, atol=1e-15)

    huge = torch.full((2, 12), 1e4)
    huge[:, 5] = -1e4
    naive_huge = torch.exp(huge) * mask / torch.sum(torch.exp(huge) * mask, dim=1, keepdim=True)
    assert not torch.isfinite(naive_huge).all()  # the official formula overflows
    y = masked_softmax(huge, mask)
    assert torch.isfinite(y).all()
    assert torch.allclose(y.sum(1), torch.ones(2))
    # equal logits: the block shares the mass, each outside entry gets eps / (3 + 8 eps)-ish
    assert torch.allclose(y[0, :3], torch.full((3,), 1 / 3), atol=1e-6)
    assert torch.all(y[0, 6:] < 1e-7)


def test_meta_learner_probabilities_and_labels():
    meta = MetaLearner(3, 2, 4, width=W)
    d, q = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 1])
    y = meta(torch.randn(3, 3, 32, 32), d, q)
    assert torch.allclose(y.sum(1), torch.ones(3), atol=1e-6)
    joint = q * 3 + d  # quality-major: 3, 2, 4
    assert joint.tolist() == [3, 2, 4]
    for b in range(3):
        inside = y[b, joint[b] * 4 : (joint[b] + 1) * 4]
        assert inside.sum() > 1 - 1e-5
        assert (y[b].sum() - inside.sum()) < 1e-5  # only eps-sized leakage outside the block
    with pytest.raises(ValueError, match="diagnosis label 3 is out of range"):
        meta(torch.randn(1, 3, 32, 32), torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="quality label -1 is out of range"):
        meta(torch.randn(1, 3, 32, 32), torch.tensor([0]), torch.tensor([-1]))


# ------------------------------------------------------------------------------------------------------------------
# losses
def test_focal_loss_hand_computation():
    # logits (0, ln 3) -> p = (1/4, 3/4); (ln 2, ln 1, ln 1) -> p = (1/2, 1/4, 1/4)
    logits2 = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], dtype=torch.float64)
    hard = torch.tensor([1, 0])
    l_true1 = (1 - 0.75) ** 2 * -math.log(0.75)  # 0.0625 * 0.2877 = 0.01798
    l_true0 = (1 - 0.25) ** 2 * -math.log(0.25)  # 0.5625 * 1.3863 = 0.77979
    loss = FocalLoss()(logits2, hard)
    assert loss.item() == pytest.approx((l_true1 + l_true0) / 2, rel=1e-12)
    none = FocalLoss(reduction="none")(logits2, hard)
    assert none.tolist() == pytest.approx([l_true1, l_true0], rel=1e-12)
    assert FocalLoss(reduction="sum")(logits2, hard).item() == pytest.approx(l_true1 + l_true0, rel=1e-12)
    # soft target (0.3, 0.7): 0.3 * 0.77979 + 0.7 * 0.01798
    soft = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    assert FocalLoss()(logits2[:1], soft).item() == pytest.approx(0.3 * l_true0 + 0.7 * l_true1, rel=1e-12)
    logits3 = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
    assert FocalLoss()(logits3, torch.tensor([0])).item() == pytest.approx(0.5**2 * math.log(2.0), rel=1e-12)
    # gamma 0 is cross-entropy
    z = torch.randn(4, 5)
    t = torch.tensor([0, 4, 2, 1])
    assert torch.allclose(FocalLoss(gamma=0.0)(z, t), nn.functional.cross_entropy(z, t), atol=1e-6)
    with pytest.raises(ValueError, match="class index 5 is out of range"):
        FocalLoss()(z, torch.tensor([0, 5, 1, 1]))
    with pytest.raises(ValueError, match="must be integers"):
        FocalLoss()(z, t.float())
    with pytest.raises(ValueError, match="probabilities matching input"):
        FocalLoss()(z, torch.rand(4, 3))


def test_entropy_regularizer_hand_computation():
    reg = EntropyRegularizer()
    # batch mean (0.5, 0.5): R = 2 * 0.5 * ln 0.5 = -ln 2
    assert reg(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).item() == pytest.approx(-math.log(2.0), rel=1e-6)
    # batch mean (0.25, 0.75)
    expected = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    assert reg(torch.tensor([[0.5, 0.5], [0.0, 1.0]])).item() == pytest.approx(expected, rel=1e-6)
    # collapsed batch: p̄ = (1, 0) -> R = 0, and log(0) is guarded (finite gradient)
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    r = reg(probs)
    r.backward()
    assert r.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(probs.grad).all()


# ------------------------------------------------------------------------------------------------------------------
# networks
def test_mkcnet_and_vanilla_output_shapes():
    x = torch.randn(2, 3, 64, 64)
    out = MKCNet(3, 2, 7, width=W)(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"diagnosis": (2, 3), "quality": (2, 2), "auxiliary": (2, 42)}
    spatial = MKCNet(2, 3, 5, in_channels=1, width=W, pool_before_attention=False)
    assert spatial.encoder(torch.randn(2, 1, 64, 64)).shape == (2, 32, 2, 2)
    out = spatial(torch.randn(2, 1, 64, 64))
    assert out["auxiliary"].shape == (2, 30)
    assert VanillaNet(3, width=W)(x)["diagnosis"].shape == (2, 3)
    enc = VGGEncoder(width=W, pool_output=False)
    assert enc.channels == (4, 8, 16, 32, 32)
    assert enc(x).shape == (2, 32, 2, 2)


def _vgg16_bn_params(c_in: int) -> int:
    total = 0
    for c_out, n in zip((64, 128, 256, 512, 512), (2, 2, 3, 3, 3)):
        for _ in range(n):
            total += 9 * c_in * c_out + c_out + 2 * c_out  # 3x3 conv weight + bias, BN weight + bias
            c_in = c_out
    return total


def test_full_size_parameter_counts():
    nd, nq, k = 3, 2, 7
    aux = nd * nq * k
    vgg = _vgg16_bn_params(3)
    assert vgg == 14_714_688 + 8_448  # torchvision vgg16 conv params + 2 * 4224 BN features
    cbam_512 = (512 * 32 + 32) + (32 * 512 + 512) + 2 * 1 * 7 * 7 + 2  # channel MLP, spatial conv (no bias), BN
    g_block = cbam_512 + 512 * 256 + 256
    c_block = (256 * 16 + 16) + (16 * 256 + 256)
    heads = (512 * 512 + 512 + 512 * nd + nd) + (256 * 256 + 256 + 256 * aux + aux) + (256 * 256 + 256 + 256 * nq + nq)
    expected_task = vgg + 3 * g_block + c_block + heads
    expected_meta = vgg + (512 * 512 + 512) + (512 * aux + aux)
    task = MKCNet(nd, nq, k)
    meta = MetaLearner(nd, nq, k)
    assert sum(p.numel() for p in task.encoder.parameters()) == vgg
    assert sum(p.numel() for p in task.parameters()) == expected_task == 15_632_907
    assert sum(p.numel() for p in meta.parameters()) == expected_meta


def test_channel_gate_on_1x1_maps_is_sigmoid_two_mlp():
    gate = ChannelGate(32, reduction=16)
    x = torch.randn(5, 32, 1, 1)
    expected = x * torch.sigmoid(2 * gate.mlp(x))[..., None, None]
    assert torch.allclose(gate(x), expected, atol=1e-6)
    cbam = CBAM(2, 32, spatial=False)
    assert torch.allclose(cbam(x), x * torch.sigmoid(2 * cbam.channel_gate.mlp(x))[..., None, None], atol=1e-6)
    # vectors are one-point maps
    assert torch.allclose(gate(x.flatten(1)), expected.flatten(1), atol=1e-6)
    assert CBAM(2, 32)(torch.randn(3, 32, 7, 7)).shape == (3, 32, 7, 7)
    with pytest.raises(ValueError, match="unknown pool type 'median'"):
        ChannelGate(32, pool_types=("avg", "median"))


def test_official_meta_forward_quirks():
    torch.manual_seed(1)
    g = GlobalAttentionBlock(32, 16).eval()
    f = torch.randn(4, 32)
    m = f[..., None, None]
    gate = g.cbam.channel_gate
    spatial = g.cbam.spatial_gate
    module_out = g.fc(spatial(m * torch.sigmoid(2 * gate.mlp(f))[..., None, None]).flatten(1))
    official_out = g.fc(spatial(m * torch.sigmoid(gate.mlp(f))[..., None, None]).flatten(1))
    assert torch.allclose(g(f), module_out, atol=1e-6)
    assert torch.allclose(g(f, official_meta_forward=True), official_out, atol=1e-6)
    assert not torch.allclose(module_out, official_out, atol=1e-4)

    c = MetaKnowledgeAssistanceBlock(16, 16)
    w = torch.randn(4, 16)
    assert torch.allclose(c(w), w * torch.sigmoid(2 * c.gate.mlp(w)), atol=1e-6)
    assert torch.allclose(c(w, official_meta_forward=True), c.gate.mlp(w), atol=1e-6)  # raw MLP, no gate

    net = MKCNet(3, 2, 7, width=W).eval()
    x = torch.randn(2, 3, 32, 32)
    params = dict(net.named_parameters())
    quirky = functional_call(net, params, (x,), {"official_meta_forward": True})
    assert torch.allclose(quirky["diagnosis"], net(x, official_meta_forward=True)["diagnosis"])
    assert not torch.allclose(quirky["diagnosis"], net(x)["diagnosis"], atol=1e-5)
    assert not torch.allclose(quirky["quality"], net(x)["quality"], atol=1e-6)


def test_batch_size_one_trains():
    # plain BatchNorm on a single value per channel raises in train mode; the CBAM spatial gate must not
    with pytest.raises(ValueError):
        nn.BatchNorm2d(1).train()(torch.randn(1, 1, 1, 1))
    gate = SpatialGate().train()
    before = gate.norm.running_mean.clone(), gate.norm.running_var.clone(), gate.norm.num_batches_tracked.clone()
    gate(torch.randn(1, 8, 1, 1)).sum().backward()
    assert gate.norm.weight.grad is not None
    after = gate.norm.running_mean, gate.norm.running_var, gate.norm.num_batches_tracked
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # running statistics not updated
    gate(torch.randn(2, 8, 1, 1))
    assert gate.norm.num_batches_tracked.item() == 1  # batch of 2: ordinary batch norm

    net = MKCNet(3, 2, 7, width=W).train()
    out = net(torch.randn(1, 3, 32, 32))
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in net.encoder.parameters())
    meta = MetaLearner(3, 2, 7, width=W).train()
    meta(torch.randn(1, 3, 32, 32), torch.tensor([1]), torch.tensor([1])).sum().backward()


@pytest.mark.filterwarnings("ignore:.*is deprecated")
def test_inference_wrapper_probabilities_and_trace():
    net = MKCNet(3, 2, 7, width=W).eval()
    wrapper = MKCNetInference(net).eval()
    x = torch.randn(3, 3, 32, 32)
    probs = wrapper(x)
    assert probs.shape == (3, 5)
    assert torch.allclose(probs[:, :3].sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(probs[:, 3:].sum(1), torch.ones(3), atol=1e-6)
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, x)
        scripted = torch.jit.script(wrapper)
        x2 = torch.randn(2, 3, 32, 32)
        assert torch.allclose(traced(x2), wrapper(x2), atol=1e-6)
        assert torch.allclose(scripted(x2), wrapper(x2), atol=1e-6)
    exported = torch.export.export(wrapper, (x,))
    assert torch.allclose(exported.module()(x), wrapper(x), atol=1e-6)
    diag_only = MKCNetInference(VanillaNet(3, width=W), outputs=("diagnosis",)).eval()
    assert diag_only(x).shape == (3, 3)
    logits = MKCNetInference(net, outputs=("auxiliary",), softmax=False)(x)
    assert torch.allclose(logits, net(x)["auxiliary"])


def test_vgg_torchvision_state_dict_mapping(tmp_path):
    enc = VGGEncoder()  # full VGG16-BN layout, the one torchvision ships
    own = enc.state_dict()
    # torchvision vgg16_bn().features: conv at these indices, BN right after each conv
    tv_convs = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    own_convs = [(b, j) for b, n in enumerate((2, 2, 3, 3, 3), 1) for j in range(0, 3 * n, 3)]
    fake = {}
    torch.manual_seed(3)
    for tv, (b, j) in zip(tv_convs, own_convs):
        for name in ("weight", "bias"):
            fake[f"features.{tv}.{name}"] = torch.randn_like(own[f"features.block{b}.{j}.{name}"])
        for name in ("weight", "bias", "running_mean", "running_var"):
            fake[f"features.{tv + 1}.{name}"] = torch.rand_like(own[f"features.block{b}.{j + 1}.{name}"])
        fake[f"features.{tv + 1}.num_batches_tracked"] = torch.tensor(7)
    fake["classifier.0.weight"] = torch.randn(8, 8)  # ignored
    path = tmp_path / "vgg16_bn.pth"
    torch.save(fake, path)
    loaded = VGGEncoder(pretrained_path=path).state_dict()
    for tv, (b, j) in zip(tv_convs, own_convs):
        assert torch.equal(loaded[f"features.block{b}.{j}.weight"], fake[f"features.{tv}.weight"])
        assert torch.equal(loaded[f"features.block{b}.{j + 1}.running_var"], fake[f"features.{tv + 1}.running_var"])
    assert enc.torchvision_key_map()["features.40.bias"] == "features.block5.6.bias"
    # own layout round-trips; mismatches are clear errors
    own_path = tmp_path / "own.pth"
    torch.save(own, own_path)
    assert torch.equal(
        VGGEncoder(pretrained_path=own_path).state_dict()["features.block3.0.weight"], own["features.block3.0.weight"]
    )
    with pytest.raises(ValueError, match="shape mismatch for features.block1.0.weight"):
        VGGEncoder(in_channels=1, pretrained_path=path)
    del fake["features.40.weight"]
    torch.save(fake, path)
    with pytest.raises(ValueError, match="missing keys"):
        VGGEncoder(pretrained_path=path)


def test_inference_wrapper_loads_the_bare_network_state_dict():
    """``models/model.pt`` holds MKCNet's own state dict; the export wrapper must load it (and its own)."""
    torch.manual_seed(0)
    net = MKCNet(3, 2, 4, in_channels=1, width=1 / 16).eval()
    wrapper = MKCNetInference(MKCNet(3, 2, 4, in_channels=1, width=1 / 16)).eval()
    wrapper.load_state_dict(net.state_dict())
    x = torch.rand(2, 1, 64, 64)
    out = net(x)
    expected = torch.cat([torch.softmax(out["diagnosis"], 1), torch.softmax(out["quality"], 1)], 1)
    torch.testing.assert_close(wrapper(x), expected)
    again = MKCNetInference(MKCNet(3, 2, 4, in_channels=1, width=1 / 16)).eval()
    again.load_state_dict(wrapper.state_dict())
    torch.testing.assert_close(again(x), expected)
