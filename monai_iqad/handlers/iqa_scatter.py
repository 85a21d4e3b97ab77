"""TensorBoard figure: predicted quality score against MOS, with the fitted 4-parameter logistic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ignite.engine import Engine

from .collector import EpochOutputCollector, as_scalar

__all__ = ["IQAScatterHandler"]


class IQAScatterHandler(EpochOutputCollector):
    """After each evaluation epoch, draw predicted score (x) vs MOS (y), the fitted VQEG logistic and the
    correlations in the title, and write it to TensorBoard as ``tag``.

    Args:
        pred_key: output key of the image-level score.
        label_key: output key of the (normalised) MOS.
        tag: TensorBoard image tag.
        kwargs: see :class:`EpochOutputCollector`.
    """

    def __init__(self, pred_key: str = "pred", label_key: str = "label", tag: str = "val/pred_vs_mos", **kwargs: Any):
        super().__init__(**kwargs)
        self.pred_key, self.label_key, self.tag = pred_key, label_key, tag

    def select(self, output: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any] | None:
        return {"pred": as_scalar(output[self.pred_key]), "mos": as_scalar(output[self.label_key])}

    def finalize(self, engine: Engine, items: Sequence[dict[str, Any]]) -> None:
        from matplotlib.figure import Figure

        from monai_iqad.metrics.correlation import fit_logistic4, logistic4, plcc, srocc

        pred = np.array([i["pred"] for i in items], dtype=np.float64)
        mos = np.array([i["mos"] for i in items], dtype=np.float64)
        fig = Figure(figsize=(4.5, 4.5), dpi=90)
        ax = fig.add_subplot(1, 1, 1)
        ax.scatter(pred, mos, s=12, alpha=0.7)
        title = f"n={len(pred)}"
        if len(pred) >= 2 and np.ptp(pred) > 0 and np.ptp(mos) > 0:
            title += f"  PLCC={plcc(pred, mos):.3f}  SROCC={srocc(pred, mos):.3f}"
            params = fit_logistic4(pred, mos)
            if params is not None:
                xs = np.linspace(pred.min(), pred.max(), 100)
                ax.plot(xs, logistic4(xs, *params), "r-", label="4-param logistic fit")
                ax.legend(loc="lower right", fontsize=7)
        ax.set_xlabel("predicted score")
        ax.set_ylabel("MOS (normalised)")
        ax.set_title(title, fontsize=8)
        fig.tight_layout()
        self.writer.add_figure(self.tag, fig, self.global_step_transform(engine))
