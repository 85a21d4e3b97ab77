"""bf16 on the CPU: native (AVX512-BF16, AMX-BF16) or emulated, and the warning where autocast would be emulated."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

import monai_iqad.utils.cpu as cpu
from monai_iqad.engines.step import autocast
from monai_iqad.utils import (
    EmulatedBF16Warning,
    cpu_bf16,
    cpu_bf16_kind,
    native_cpu_bf16,
    warn_if_emulated_cpu_bf16,
)


def test_native_bf16_from_the_flags(monkeypatch):
    assert native_cpu_bf16({"avx2", "avx512f", "avx512_vnni"}) is False  # an Intel Xeon without BF16
    assert native_cpu_bf16({"avx512f", "avx512_bf16"}) is True  # e.g. AMD EPYC Zen 4
    assert native_cpu_bf16({"amx_bf16", "amx_tile"}) is True
    kinds = [cpu_bf16_kind(f) for f in ({"avx512f"}, {"avx512_bf16"}, {"avx512_bf16", "amx_bf16"}, set())]
    assert kinds == ["emulated", "avx512_bf16", "amx", None]
    # no flags (no /proc/cpuinfo): torch's probes decide, and None when torch has none
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_cpu_bf16(set()) is True
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert native_cpu_bf16(set()) is None


def test_warning_once_per_caller_and_only_where_emulated(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where bf16 is native or unknown
        assert warn_if_emulated_cpu_bf16("test native", {"avx512_bf16"}) is False
        monkeypatch.setattr(cpu, "native_cpu_bf16", lambda flags=None: None)
        assert warn_if_emulated_cpu_bf16("test unknown") is False
    monkeypatch.setattr(cpu, "native_cpu_bf16", lambda flags=None: False)
    with pytest.warns(EmulatedBF16Warning, match="test emulated: bfloat16 autocast .* slower than float32"):
        assert warn_if_emulated_cpu_bf16("test emulated") is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_emulated_cpu_bf16("test emulated") is True  # once per caller
        assert cpu_bf16("false", "test config") is False  # off: nothing to say
    with pytest.warns(EmulatedBF16Warning, match="test config"):
        assert cpu_bf16("true", "test config") is True  # the setting is kept


def test_engine_autocast_warns_on_emulated_cpu_bf16(monkeypatch):
    class FakeTrainer(SimpleNamespace):
        pass

    monkeypatch.setattr(cpu, "native_cpu_bf16", lambda flags=None: False)
    engine = FakeTrainer(amp=True, amp_kwargs={"dtype": torch.bfloat16}, state=SimpleNamespace(device="cpu"))
    with pytest.warns(EmulatedBF16Warning, match="FakeTrainer"):
        with autocast(engine):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    off = FakeTrainer(amp=False, amp_kwargs={}, state=SimpleNamespace(device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with autocast(off):
            assert not torch.is_autocast_enabled("cpu")
