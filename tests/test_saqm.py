"""SAQM network: Table 1 parameter counts, patch extraction, score averaging."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from monai_iqad.networks import SAQM, SelfAttention2d, load_with_added_input_channels

# Tliba et al., Table 1: the eight convolutions of one stack (value stack, C = 512)
TABLE1 = [3_584, 295_168, 590_080, 590_080, 1_180_160, 2_359_808, 2_359_808, 262_656]
QK_LAST = 512 * 64 + 64  # 1x1 conv to C/8 = 64
WIDTH = 1 / 16  # 8-16-16-16-32-32-32 stacks, C = 32, C/8 = 4


def _conv_params(stack: nn.Module) -> list[int]:
    return [sum(p.numel() for p in m.parameters()) for m in stack.modules() if isinstance(m, nn.Conv2d)]


@pytest.fixture(scope="module")
def small() -> SAQM:
    torch.manual_seed(0)
    return SAQM(width=WIDTH).eval()


def test_table1_parameter_counts_at_default_width():
    net = SAQM()
    assert isinstance(net.attention, SelfAttention2d)
    assert _conv_params(net.attention.value) == TABLE1
    assert _conv_params(net.attention.query) == TABLE1[:-1] + [QK_LAST]
    assert _conv_params(net.attention.key) == TABLE1[:-1] + [QK_LAST]
    stack_body = sum(TABLE1[:-1])
    regressor = 512 * 256 + 256 + 256 + 1
    total = 3 * stack_body + TABLE1[-1] + 2 * QK_LAST + 1 + regressor  # + gamma
    assert sum(p.numel() for p in net.parameters()) == total == 22_595_970
    assert net.attention.gamma.item() == 0.0
    # every conv is followed by a ReLU, max pools after the 4th and 7th conv (Table 1 layout)
    kinds = [type(m).__name__ for m in net.attention.value]
    assert kinds == ["Conv2d", "ReLU"] * 4 + ["MaxPool2d"] + ["Conv2d", "ReLU"] * 3 + ["MaxPool2d", "Conv2d", "ReLU"]
    assert net.out_channels == 512 and net.qk_channels == 64


def test_forward_shapes(small):
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        score = small(x)
        score2, feats = small(x, return_features=True)
        logits = small(x, patch_level=True)
        logits2, pfeats = small(x, patch_level=True, return_features=True)
        smap = small.score_map(x)
    assert score.shape == (2, 1) and ((score >= 0) & (score <= 1)).all()
    assert feats.shape == (2, small.out_channels) == (2, 32)
    assert logits.shape == (2, 6) and pfeats.shape == (2, 6, 32)
    assert smap.shape == (2, 1, 2, 3)
    torch.testing.assert_close(score, score2)
    torch.testing.assert_close(logits, logits2)
    torch.testing.assert_close(feats, pfeats.mean(1))
    torch.testing.assert_close(smap.flatten(1).mean(1, keepdim=True), score)
    torch.testing.assert_close(smap.flatten(1), torch.sigmoid(logits))


def test_patch_scores_average_to_image_score_and_remainder_dropped(small):
    x = torch.rand(2, 3, 70, 70)  # 2x2 patches of 32; the last 6 rows/cols are dropped
    assert small.num_patches(70, 70) == 4
    with torch.no_grad():
        score = small(x)
        logits = small(x, patch_level=True)
        manual = []
        for b in range(2):
            crops = [x[b : b + 1, :, r : r + 32, c : c + 32] for r in (0, 32) for c in (0, 32)]  # row-major
            manual.append(torch.cat([small(crop, patch_level=True) for crop in crops], dim=1))
        manual = torch.cat(manual)
    torch.testing.assert_close(logits, manual)
    torch.testing.assert_close(score, torch.sigmoid(manual).mean(1, keepdim=True))
    # changing only the dropped border leaves the score unchanged
    y = x.clone()
    y[:, :, 64:, :] = torch.rand_like(y[:, :, 64:, :])
    y[:, :, :, 64:] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(small(y), score)


@pytest.mark.parametrize("patch_batch_size", [3, 5])
def test_chunking_matches_unchunked(small, patch_batch_size):
    chunked = SAQM(width=WIDTH, patch_batch_size=patch_batch_size).eval()
    chunked.load_state_dict(small.state_dict())
    x = torch.rand(2, 3, 64, 96)  # 2 x 6 patches; chunks of 5 straddle the two images
    with torch.no_grad():
        torch.testing.assert_close(chunked(x, patch_level=True), small(x, patch_level=True))
        torch.testing.assert_close(chunked(x), small(x))


def test_overlapping_stride_count(small):
    net = SAQM(width=WIDTH, stride=16).eval()
    assert net.num_patches(64, 96) == 3 * 5
    assert net.num_patches(70, 70) == 3 * 3
    assert net.grid_shape(47, 32) == (1, 1)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 96), patch_level=True).shape == (1, 15)
        assert net.score_map(torch.rand(1, 3, 64, 96)).shape == (1, 1, 3, 5)


def test_single_patch_input_and_gradients(small):
    net = SAQM(width=WIDTH)
    x = torch.rand(4, 3, 32, 32)
    logits, feats = net(x, patch_level=True, return_features=True)
    assert logits.shape == (4, 1) and feats.shape == (4, 1, 32)
    logits.sum().backward()
    assert net.attention.value[0].weight.grad is not None
    assert net.regressor.output.weight.grad is not None


def test_errors(small):
    with pytest.raises(ValueError, match=r"\(20, 40\)"):
        small(torch.rand(1, 3, 20, 40))
    with pytest.raises(ValueError, match="input channels"):
        small(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="B, C, H, W"):
        small(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="spatial_dims"):
        SAQM(spatial_dims=3)
    with pytest.raises(ValueError, match="width"):
        SAQM(width=0)
    with pytest.raises(ValueError, match="num_patches|patch"):
        small.num_patches(31, 64)


def test_torchscript(small):
    """The bundle's ``ckpt_export`` scripts the network: forward (all return modes) and score_map must compile."""
    scripted = torch.jit.script(small)
    x = torch.rand(2, 3, 70, 100)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), small(x))
        torch.testing.assert_close(scripted(x, True, True)[1], small(x, return_features=True, patch_level=True)[1])
        torch.testing.assert_close(scripted.score_map(x), small.score_map(x))


def test_patch_features_differ_at_initialisation():
    """He init keeps the 8-conv stacks from collapsing every patch to the same feature."""
    net = SAQM(width=WIDTH).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        _, feats = net(x, patch_level=True, return_features=True)
    assert feats.std(dim=1).mean() > 1e-3


def test_load_with_added_input_channels_is_a_zero_warm_start():
    """Weights of a 3-channel SAQM in a 5-channel one: the old channels copied, the added ones zero, so the output
    ignores the extra planes until trained; the added weights still get gradients; other mismatches fail."""
    torch.manual_seed(0)
    old = SAQM(width=WIDTH).eval()
    new = load_with_added_input_channels(SAQM(in_channels=5, width=WIDTH), {"model": old.state_dict()}).eval()
    w = new.attention.query[0].weight
    assert w.shape[1] == 5 and torch.equal(w[:, :3], old.attention.query[0].weight)
    assert torch.count_nonzero(w[:, 3:]) == 0
    x = torch.randn(2, 3, 64, 64)
    planes = torch.randn(2, 2, 64, 64)
    torch.testing.assert_close(new(torch.cat([x, planes], 1)), old(x), rtol=0, atol=1e-6)
    new(torch.cat([x, planes], 1)).sum().backward()
    assert new.attention.value[0].weight.grad[:, 3:].abs().sum() > 0
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_with_added_input_channels(SAQM(in_channels=5, width=2 * WIDTH), old.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch"):  # fewer channels is not a warm start
        load_with_added_input_channels(SAQM(in_channels=2, width=WIDTH), old.state_dict())
