"""What people look at: TensorBoard tags of every bundle after a tiny training run, and the console progress bar.

The event files are read back with TensorBoard's ``EventAccumulator``. Expected per kind:

- SAQM: every loss term, the GRL lambda, the attention gamma, the domain accuracy, the learning rate, the validation
  correlations, the predicted-vs-MOS scatter (with the fitted logistic) and the worst-scored validation images with
  their patch-score heat maps;
- pretrained SAQM (``medical_saqm_iqa``): the regression and ranking loss terms, the attention gamma and the
  validation correlations;
- MKCNet: every loss term, both learning rates, the validation metrics overall and per quality grade, ROC curves and
  confusion matrices overall and per quality grade.
"""

from __future__ import annotations

import io
import re
import sys

import pytest
from bundle_testing import bundle_dir, bundle_kind, bundle_names, read_json, reference_run
from ignite.engine import Engine, Events

from monai_iqad.handlers import ConsoleProgressBar

BUNDLES = bundle_names()

EXPECTED = {
    "saqm": {
        "scalars": {
            "train/loss", "train/loss_reg", "train/loss_dom", "train/grl_lambda", "train/gamma", "train/domain_acc",
            "lr/adam", "srocc", "plcc", "plcc_logistic", "krcc",
        },
        "images": {"val/pred_vs_mos", "val/worst_images"},
    },
    # the pretrained medical SAQM (ranking loss on, no domain adaptation): loss terms, attention gamma, correlations
    "saqm_pretrained": {
        "scalars": {"train/loss", "train/loss_reg", "train/loss_rank", "train/gamma", "srocc", "plcc"},
        "images": set(),
    },
    "mkcnet": {
        "scalars": {
            "train/loss", "train/loss_d", "train/loss_q", "train/loss_aux", "train/loss_meta", "train/entropy",
            "lr/task", "lr/meta", "auc", "acc", "f1", "quality_acc",
        },
        "images": {"val/roc/all", "val/confusion/all"},
        # per quality grade: at least one grade present in the validation split
        "patterns": (r"val/roc/q\d+", r"val/confusion/q\d+", r"auc_q\d+"),
    },
}  # fmt: skip
_ETA = re.compile(r"\d+:\d+<\d+:\d+")  # tqdm's "elapsed<remaining"


def _tags(log_dir) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set[str]] = {"scalars": set(), "images": set()}
    for f in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for kind in tags:
            tags[kind] |= set(acc.Tags().get(kind, []))
    return tags


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_tensorboard_tags_after_training(name):
    kind = bundle_kind(name)
    if kind not in EXPECTED:
        pytest.skip(f"{name}: no expectation for bundle kind {kind!r}")
    bundle = reference_run(name)
    tags = _tags(bundle / "eval")
    expected = EXPECTED[kind]
    for section in ("scalars", "images"):
        missing = sorted(expected[section] - tags[section])
        assert not missing, f"{name}: TensorBoard {section} missing {missing} (found {sorted(tags[section])})"
    for pattern in expected.get("patterns", ()):
        found = [t for t in tags["scalars"] | tags["images"] if re.fullmatch(pattern, t)]
        assert found, f"{name}: no TensorBoard tag matching {pattern!r}"
    # the run's stdout was a pipe, not a terminal: no progress bar in its output
    log = (bundle / "train.log").read_text(encoding="utf-8")
    assert not _ETA.search(log), "progress bars must be off when stdout is not a TTY"


@pytest.mark.parametrize("name", BUNDLES)
def test_progress_bars_in_training_evaluation_and_inference(name):
    configs = bundle_dir(name) / "configs"

    def targets(node) -> list[str]:
        return [h.get("_target_", "") for h in node if isinstance(h, dict)]

    train = read_json(configs / "train.json")
    assert any(t.endswith("ConsoleProgressBar") for t in targets(train["train"]["handlers"])), "training"
    evaluate = read_json(configs / "evaluate.json")
    handlers = evaluate.get("validate#handlers") or evaluate.get("validate", {}).get("handlers", [])
    assert any(t.endswith("ConsoleProgressBar") for t in targets(handlers)), "evaluation"
    inference = read_json(configs / "inference.json")
    assert any(t.endswith("ConsoleProgressBar") for t in targets(inference.get("handlers", []))), "inference"


def _engine() -> Engine:
    engine = Engine(lambda e, b: {"loss": 0.5})
    engine.state.max_epochs = 1
    return engine


def test_progress_bar_off_when_stdout_is_not_a_tty(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    bar = ConsoleProgressBar()
    assert not bar.enabled
    engine = _engine()
    before = sum(len(engine._event_handlers[e]) for e in engine._event_handlers)
    bar.attach(engine)
    assert sum(len(engine._event_handlers[e]) for e in engine._event_handlers) == before


def test_progress_bar_on_for_a_tty(monkeypatch):
    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", _Tty())
    assert ConsoleProgressBar().enabled
    assert not ConsoleProgressBar(enabled=False).enabled


def test_progress_bar_forced_shows_progress_and_eta(capsys):
    engine = Engine(lambda e, b: {"loss": 0.25})
    ConsoleProgressBar(output_transform=lambda out: out["loss"], enabled=True, desc="train").attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    engine.run(range(4), max_epochs=1)
    err = capsys.readouterr().err
    assert seen == [1, 2, 3, 4]
    assert "train" in err and "/4]" in err and _ETA.search(err), f"no progress/ETA in {err!r}"
