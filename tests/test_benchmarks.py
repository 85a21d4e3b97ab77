"""The benchmark scripts run end to end in ``--quick`` mode and write only their own section of the results file."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = ("saqm_throughput", "mkcnet_cost")
FOREIGN = "<!-- other:start -->\nsomeone else's section\n<!-- other:end -->\n"


def _bench_utils():
    spec = importlib.util.spec_from_file_location("bench_utils", BENCHMARKS / "bench_utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_section_replaces_only_its_own_section(tmp_path):
    utils = _bench_utils()
    path = tmp_path / "docs" / "benchmarks.md"
    utils.write_section(path, "alpha", "first")
    text = path.read_text()
    assert text.startswith("# Benchmarks") and "<!-- alpha:start -->\nfirst\n<!-- alpha:end -->" in text
    utils.write_section(path, "beta", "second")
    utils.write_section(path, "alpha", "third\n")
    text = path.read_text()
    assert "first" not in text and "third" in text and "second" in text
    assert text.index("alpha:start") < text.index("beta:start")  # replaced in place, not appended
    assert text.count("alpha:start") == 1
    path.write_text("<!-- alpha:start -->\nno end marker\n")
    with pytest.raises(ValueError, match="unbalanced"):
        utils.write_section(path, "alpha", "x")


def test_benchmark_scripts_quick(tmp_path):
    """Both scripts (in parallel, one thread each) complete and write their section into a copy of the docs."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs, outputs = {}, {}
    for name in SCRIPTS:
        outputs[name] = tmp_path / f"{name}.md"
        # a stale copy of the script's own section and a foreign section that must survive
        outputs[name].write_text(f"# Benchmarks\n\n{FOREIGN}\n<!-- {name}:start -->\nstale\n<!-- {name}:end -->\n")
        cmd = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--threads", "1"]
        procs[name] = subprocess.Popen(
            [*cmd, "--output", str(outputs[name])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"{name} failed:\n{err[-3000:]}"
        text = outputs[name].read_text()
        assert FOREIGN in text and "stale" not in text
        start, end = text.index(f"<!-- {name}:start -->"), text.index(f"<!-- {name}:end -->")
        section = text[start:end]
        assert "Machine:" in section and "|---|" in section
        assert section.split("\n", 1)[1].strip() in out  # the printed figures are the written ones
    saqm = outputs["saqm_throughput"].read_text()
    assert "SAQM inference" in saqm and "vs dense conv" in saqm and "FlopCounterMode" in saqm
    mkc = outputs["mkcnet_cost"].read_text()
    for config in ("vanilla", "multitask", "epoch/second_order", "iteration/first_order"):
        assert f"`{config}`" in mkc
    assert "second-order backward" in mkc and "paper config" in mkc
