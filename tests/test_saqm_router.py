"""SAQMRouter: each image scored by its modality's expert, state dict and route round trip, errors, TorchScript, and
``benchmarks/iqa_ladder.py --router``."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_iqad.networks import SAQM, SAQMEnsemble, SAQMRouter
from monai_iqad.transforms import ModalityChannels

WIDTH = 1 / 16
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _expert(in_channels: int, seed: int) -> SAQM:
    torch.manual_seed(seed)
    net = SAQM(in_channels=in_channels, width=WIDTH)
    with torch.no_grad():  # gamma starts at 0; make the attention path count too
        net.attention.gamma.fill_(0.5 + 0.1 * seed)
    return net.eval()


def _inputs(modalities: list[str | None], image_channels: int = 3, size: int = 64) -> torch.Tensor:
    torch.manual_seed(42)
    planes = ModalityChannels()
    return torch.stack([planes(torch.rand(image_channels, size, size), m) for m in modalities])


def _router() -> tuple[SAQMRouter, SAQM, SAQM]:
    plain, conditioned = _expert(3, 0), _expert(9, 1)
    routes = {"CT": 1, "mr": 1, "DX": 1}  # case and DICOM codes: DX is CR
    router = SAQMRouter.from_state_dicts([plain.state_dict(), conditioned.state_dict()], routes=routes, width=WIDTH)
    return router.eval(), plain, conditioned


def test_each_image_is_scored_by_its_expert():
    router, plain, conditioned = _router()
    assert router.in_channels == 9 and router.image_channels == 3 and router.route.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert [router.expert_of(m) for m in ("CR", "CT", "MR", "US", "fundus", None, "PET")] == [1, 1, 1, 0, 0, 0, 0]
    mods = ["CT", "US", None, "MR", "CR"]
    x = _inputs(mods)
    with torch.no_grad():
        got, grid, index = router(x), router.score_map(x), router.plane_index(x)
        by_plain = plain(x[:, :3])  # the unconditioned expert sees the image channels only
        by_conditioned = conditioned(x)  # the conditioned one the whole input, planes included
    assert index.tolist() == [1, 3, 6, 2, 0] and got.shape == (5, 1) and grid.shape == (5, 1, 2, 2)
    expected = torch.where(torch.tensor([True, False, False, True, True])[:, None], by_conditioned, by_plain)
    assert not torch.allclose(by_plain, by_conditioned)  # the experts differ, so the route matters
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(grid.mean(dim=(2, 3)), got, rtol=0, atol=1e-6)
    torch.testing.assert_close(grid[1:3], plain.score_map(x[1:3, :3]), rtol=0, atol=1e-6)


def test_context_planes_are_dropped_for_a_plain_expert():
    """With contrast-context planes (5 image channels) the 3-channel expert gets the first 3, the 11-channel one all."""
    plain, context = _expert(3, 0), _expert(11, 2)
    router = SAQMRouter.from_state_dicts([plain.state_dict(), context.state_dict()], routes={"MR": 1}, width=WIDTH)
    assert router.image_channels == 5 and router.in_channels == 11
    x = _inputs(["MR", "US"], image_channels=5)
    with torch.no_grad():
        got = router(x)
        torch.testing.assert_close(got[0], context(x[:1])[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(got[1], plain(x[1:, :3])[0], rtol=0, atol=1e-6)


def test_state_dict_round_trip_keeps_the_route_and_experts():
    router, plain, _ = _router()
    state = router.state_dict()
    assert state["route"].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert SAQMRouter.is_state_dict(state) and not SAQMRouter.is_state_dict(plain.state_dict())
    assert not SAQMRouter.is_state_dict({"route": state["route"]}) and not SAQMRouter.is_state_dict([1])
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    again = SAQMRouter.from_state_dict(torch.load(buf, weights_only=True), width=WIDTH).eval()
    assert again.route.tolist() == router.route.tolist()  # the route comes from the file, not from arguments
    x = _inputs(["CT", "US", None])
    with torch.no_grad():
        torch.testing.assert_close(again(x), router(x), rtol=0, atol=0)
    expert0 = SAQM(in_channels=3, width=WIDTH)
    expert0.load_state_dict(SAQMRouter.expert_state_dict(state, 0))  # a plain SAQM again, e.g. to fine-tune
    with torch.no_grad():
        torch.testing.assert_close(expert0.eval()(x[:, :3]), plain(x[:, :3]), rtol=0, atol=0)


def test_gradients_reach_only_the_experts_used():
    router, _, _ = _router()
    x = _inputs(["CT", "MR"])
    router(x).sum().backward()
    assert router.experts[1].attention.value[0].weight.grad.abs().sum() > 0
    assert router.experts[0].attention.value[0].weight.grad is None


def test_torchscript_matches_eager():
    router, _, _ = _router()
    scripted = torch.jit.script(router)
    x = _inputs(["CT", "US", None])
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), router(x), rtol=0, atol=1e-6)
        torch.testing.assert_close(scripted.score_map(x), router.score_map(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_routes_any_batch(tmp_path, dynamo):
    """An ONNX export by either exporter (the TorchScript tracer, or ``torch.export``, the default since PyTorch 2.9
    and what ``monai.bundle onnx_export`` uses), made on a batch with both experts' modalities, scores batches of one
    modality only, and mixed batches in another order, as the eager router."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    router, _, _ = _router()
    path = tmp_path / "router.onnx"
    x0 = (_inputs(["CT", "US"]),)
    if dynamo:  # a static batch of 2 (SAQM's own export specialises the batch size, as in the bundles' test)
        pytest.importorskip("onnxscript")
        torch.onnx.export(router, x0, str(path), dynamo=True)
        batches = (["US", "US"], ["CT", "CT"], [None, "MR"])
    else:
        torch.onnx.export(router, x0, str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}})
        batches = (["US"], ["CT"], [None, "CT", "US", "MR"])
    session = ort.InferenceSession(str(path))
    for mods in batches:
        x = _inputs(mods)
        with torch.no_grad():
            want = router(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="at least one expert"):
        SAQMRouter(expert_channels=())
    with pytest.raises(ValueError, match="expert 1: 7 input channels"):
        SAQMRouter(expert_channels=(3, 7), width=WIDTH)
    with pytest.raises(ValueError, match="default expert 2"):
        SAQMRouter(default=2, width=WIDTH)
    with pytest.raises(ValueError, match="'PET' is not one of"):
        SAQMRouter(routes={"PET": 1}, width=WIDTH)
    with pytest.raises(ValueError, match="'CT' is routed to expert 5"):
        SAQMRouter(routes={"CT": 5}, width=WIDTH)
    with pytest.raises(ValueError, match="no state dict"):
        SAQMRouter.from_state_dicts([])
    with pytest.raises(ValueError, match="expert 1: the state dict does not fit"):
        bad = SAQM(in_channels=9, width=2 * WIDTH).state_dict()
        SAQMRouter.from_state_dicts([_expert(3, 0).state_dict(), bad], width=WIDTH)
    with pytest.raises(ValueError, match="not a SAQMRouter state dict"):
        SAQMRouter.from_state_dict(_expert(3, 0).state_dict(), width=WIDTH)
    with pytest.raises(ValueError, match=r"route \[1, 1\] does not fit"):
        SAQMRouter.from_state_dict({**_router()[0].state_dict(), "route": torch.tensor([1, 1])}, width=WIDTH)
    with pytest.raises(KeyError, match="no expert 3"):
        SAQMRouter.expert_state_dict(_router()[0].state_dict(), 3)
    router = _router()[0]
    with pytest.raises(ValueError, match=r"expects \(B, 9, H, W\)"):
        router(torch.rand(1, 3, 64, 64))
    x = _inputs(["CT"])
    x[:, 5] = 1.0  # a second plane (MR) set next to CT
    with pytest.raises(ValueError, match="not constant one-hot"):
        router(x)
    x = _inputs(["CT"])
    x[0, 4, 0, 0] = 0.0  # the CT plane is not constant
    with pytest.raises(ValueError, match="not constant one-hot"):
        router(x)


def test_non_strict_router_reads_any_planes_by_their_means():
    """``strict=False`` (the bundle's setting, for the model zoo's ``verify_net_in_out``, which feeds uniform noise):
    each image's modality is the plane of largest mean when that mean exceeds 0.5, else unknown; exact one-hot planes
    route as in strict mode."""
    strict = _router()[0]
    loose = SAQMRouter.from_state_dict(strict.state_dict(), width=WIDTH, strict=False).eval()
    x = torch.zeros(3, 9, 64, 64)
    x[:, :3] = torch.rand(3, 3, 64, 64)
    x[0, 3:] = 0.4  # every plane at 0.4: unknown
    x[0, 4, :32] = 0.5  # CT plane mean 0.45: still unknown
    x[1, 3:] = 0.3
    x[1, 5] = 0.7  # MR plane the largest, above 0.5
    x[2, 3:] = torch.rand(6, 64, 64) * 0.2
    x[2, 6, 10:, :] = 0.9  # US plane mean 0.76 with noise
    assert loose.plane_index(x).tolist() == [6, 2, 3]
    with torch.no_grad():
        got = loose(x)
        torch.testing.assert_close(got[0], strict.experts[0](x[:1, :3])[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(got[1], strict.experts[1](x[1:2])[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(got[2], strict.experts[0](x[2:, :3])[0], rtol=0, atol=1e-6)
        one_hot = _inputs(["CT", "US", None, "CR"])
        torch.testing.assert_close(loose(one_hot), strict(one_hot), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not constant one-hot"):
        strict(x)
    assert torch.isfinite(loose(torch.rand(2, 9, 96, 96))).all()  # what verify_net_in_out does


def test_iqa_ladder_builds_a_router(tmp_path, monkeypatch):
    """``iqa_ladder.py --router``: writes a router of the given checkpoints and routes, which ``_load_saqm`` loads
    and ``_score_saqm`` scores with the planes of each image's modality."""
    spec = importlib.util.spec_from_file_location("iqa_ladder_router", BENCHMARKS / "iqa_ladder.py")
    ladder = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec.loader.exec_module(ladder)
    plain, conditioned = _expert(3, 0), _expert(9, 1)
    paths = [tmp_path / "plain.pt", tmp_path / "cond.pt"]
    torch.save(plain.state_dict(), paths[0])
    torch.save({"model": conditioned.state_dict()}, paths[1])  # a training checkpoint layout is unwrapped too
    out = tmp_path / "router.pt"
    argv = ["--router", *map(str, paths), "--route", "CT=1", "MR=1", "--router-out", str(out), "--width", str(WIDTH)]
    assert ladder.main(argv) == 0
    router = ladder._load_saqm(out, WIDTH)
    assert isinstance(router, SAQMRouter) and router.route.tolist() == [0, 1, 1, 0, 0, 0, 0]
    torch.manual_seed(0)
    images = [torch.rand(1, 5, 64, 64) for _ in range(3)]  # 3 normalised channels + 2 context planes
    mods = ["CT", "US", None]
    got = ladder._score_saqm(router, images, False, mods)
    want_ct = ladder._score_saqm(conditioned, images[:1], False, mods[:1])
    want_rest = ladder._score_saqm(plain, images[1:], False, mods[1:])
    np.testing.assert_allclose(got, np.concatenate([want_ct, want_rest]), atol=1e-6)
    with pytest.raises(ValueError, match="MODALITY=K"):
        ladder.main(["--router", str(paths[0]), "--route", "CT", "--router-out", str(out)])
    # an expert joined by '+': the prediction ensemble of those checkpoints
    other = _expert(9, 3)
    torch.save(other.state_dict(), tmp_path / "other.pt")
    joined = f"{paths[1]}+{tmp_path / 'other.pt'}"
    argv = ["--router", str(paths[0]), joined, "--route", "MR=1", "--router-out", str(out), "--width", str(WIDTH)]
    assert ladder.main(argv) == 0
    router = ladder._load_saqm(out, WIDTH)
    assert isinstance(router.experts[1], SAQMEnsemble) and len(router.experts[1].members) == 2
    got = ladder._score_saqm(router, images[:2], False, ["MR", "US"])
    want_mr = (
        ladder._score_saqm(conditioned, images[:1], False, ["MR"])
        + ladder._score_saqm(other, images[:1], False, ["MR"])
    ) / 2
    np.testing.assert_allclose(got, np.concatenate([want_mr, want_rest[:1]]), atol=1e-6)
    with pytest.raises(ValueError, match="an expert is a SAQM or SAQMEnsemble checkpoint"):
        ladder.main(["--router", f"{paths[0]}+{out}", "--router-out", str(tmp_path / "bad.pt"), "--width", str(WIDTH)])


def _ensemble_router() -> tuple[SAQMRouter, SAQM, list[SAQM]]:
    """Expert 0 a plain SAQM; expert 1, for MR, the ensemble of two conditioned SAQMs."""
    plain, members = _expert(3, 0), [_expert(9, 1), _expert(9, 3)]
    ensemble = SAQMEnsemble.from_state_dicts([m.state_dict() for m in members], width=WIDTH)
    router = SAQMRouter.from_state_dicts([plain.state_dict(), ensemble.state_dict()], routes={"MR": 1}, width=WIDTH)
    return router.eval(), plain, members


def test_an_ensemble_expert_scores_the_mean_of_its_members():
    router, plain, members = _ensemble_router()
    assert isinstance(router.experts[0], SAQM) and isinstance(router.experts[1], SAQMEnsemble)
    assert len(router.experts[1].members) == 2 and router.route.tolist() == [0, 0, 1, 0, 0, 0, 0]
    state = router.state_dict()
    assert "experts.1.members.1.attention.gamma" in state and "experts.0.attention.gamma" in state
    x = _inputs(["MR", "CT", "MR", None])
    with torch.no_grad():
        got = router(x)
        a, b = members[0](x), members[1](x)
        assert not torch.allclose(a, b)  # distinct members, so the mean is not either one
        mr = torch.tensor([True, False, True, False])[:, None]
        torch.testing.assert_close(got, torch.where(mr, (a + b) / 2, plain(x[:, :3])), rtol=0, atol=1e-6)
        again = SAQMRouter.from_state_dict(state, width=WIDTH).eval()  # the members' count comes from the keys
        torch.testing.assert_close(again(x), got, rtol=0, atol=0)
        scripted = torch.jit.script(router)
        torch.testing.assert_close(scripted(x), got, rtol=0, atol=1e-6)
    one = SAQMEnsemble.from_state_dicts([members[0].state_dict()], width=WIDTH).state_dict()  # keys members.0.*
    single = SAQMRouter.from_state_dicts([plain.state_dict(), one], width=WIDTH)
    assert isinstance(single.experts[1], SAQM)  # a one-member ensemble is the plain SAQM it holds
    with pytest.raises(ValueError, match=r"expert_members \[1\] must give a count >= 1 for each of the 2"):
        SAQMRouter(expert_members=[1], width=WIDTH)
    with pytest.raises(ValueError, match="for each of the 2"):
        SAQMRouter(expert_members=[1, 0], width=WIDTH)
    with pytest.raises(ValueError, match="expert 1: the state dict does not fit its SAQMEnsemble"):
        states = [SAQMRouter.expert_state_dict(state, k) for k in (0, 1)]
        SAQMRouter.from_state_dicts(states, expert_members=[1, 3], width=WIDTH)  # 2 members given, 3 asked for


def test_architecture_of_a_saved_router(tmp_path):
    """``architecture_of`` reads each expert's input channels and members from a saved router (state dict, checkpoint
    under ``"model"``, or a path), so a config can build whatever router a ``model.pt`` holds; None otherwise."""
    router, plain, members = _ensemble_router()
    three = SAQMRouter.from_state_dicts(
        [plain.state_dict(), members[0].state_dict(), router.experts[1].state_dict()],
        routes={"CR": 1, "MR": 2},
        width=WIDTH,
    )
    want = {"expert_channels": [3, 9, 9], "expert_members": [1, 1, 2]}
    state = three.state_dict()
    torch.save(state, tmp_path / "router.pt")
    torch.save({"model": state}, tmp_path / "checkpoint.pt")
    for saved in (state, {"model": state}, tmp_path / "router.pt", str(tmp_path / "checkpoint.pt")):
        assert SAQMRouter.architecture_of(saved) == want
    rebuilt = SAQMRouter(**want, width=WIDTH)
    rebuilt.load_state_dict(state)  # strict: the architecture is the saved one
    x = _inputs(["MR", "CR", None])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), three.eval()(x), rtol=0, atol=0)
    assert rebuilt.route.tolist() == [1, 0, 2, 0, 0, 0, 0]  # planes CR, CT, MR, US, fundus, natural, unknown
    assert SAQMRouter.architecture_of(plain.state_dict()) is None  # one SAQM's weights
    assert SAQMRouter.architecture_of(tmp_path / "missing.pt") is None
    (tmp_path / "text.pt").write_text("not weights\n")  # damaged: left to the weights loader, which names the file
    assert SAQMRouter.architecture_of(tmp_path / "text.pt") is None
    with pytest.raises(ValueError, match="not an SAQM or SAQMEnsemble state dict"):
        SAQMRouter.architecture_of({"route": state["route"], "experts.0.foo": torch.zeros(1)})
