"""TensorBoard figures for diagnosis: ROC curves and confusion matrices, overall and per image-quality grade."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from .collector import EpochOutputCollector

__all__ = ["ClassificationFiguresHandler"]


class ClassificationFiguresHandler(EpochOutputCollector):
    """Draw ROC curves (one-vs-rest per class) and confusion matrices for all images and for each quality grade.

    Tags: ``{prefix}roc/all``, ``{prefix}roc/q<g>``, ``{prefix}confusion/all``, ``{prefix}confusion/q<g>``.

    Args:
        num_classes: number of diagnosis classes.
        class_names: names for the axes (default ``0..C-1``).
        quality_names: names of the quality grades used in titles.
        pred_key: output key of the diagnosis logits (or probabilities with ``apply_softmax=False``).
        label_key: output key of the diagnosis label.
        quality_key: output key of the quality grade (``None`` = overall only).
        apply_softmax: softmax ``pred`` first.
        tag_prefix: prefix of the TensorBoard tags.
        kwargs: see :class:`EpochOutputCollector`.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        quality_names: Sequence[str] | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        quality_key: str | None = "quality",
        apply_softmax: bool = True,
        tag_prefix: str = "val/",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.quality_names = list(quality_names) if quality_names else None
        self.pred_key, self.label_key, self.quality_key = pred_key, label_key, quality_key
        self.apply_softmax = apply_softmax
        self.tag_prefix = tag_prefix

    def select(self, output: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any] | None:
        pred = torch.as_tensor(output[self.pred_key]).float().reshape(-1)
        prob = torch.softmax(pred, 0) if self.apply_softmax else pred
        item = {"prob": prob, "label": int(torch.as_tensor(output[self.label_key]).reshape(-1)[0])}
        if self.quality_key is not None and self.quality_key in output:
            item["quality"] = int(torch.as_tensor(output[self.quality_key]).reshape(-1)[0])
        return item

    def _groups(self, items: Sequence[dict[str, Any]]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
        prob = np.stack([i["prob"].numpy() for i in items]).astype(np.float64)
        label = np.array([i["label"] for i in items])
        groups = [("all", "all images", prob, label)]
        if all("quality" in i for i in items):
            quality = np.array([i["quality"] for i in items])
            for g in sorted(set(quality.tolist())):
                name = self.quality_names[g] if self.quality_names and g < len(self.quality_names) else f"grade {g}"
                m = quality == g
                groups.append((f"q{g}", f"quality {name}", prob[m], label[m]))
        return groups

    def finalize(self, engine: Engine, items: Sequence[dict[str, Any]]) -> None:
        from matplotlib.figure import Figure
        from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

        step = self.global_step_transform(engine)
        for key, title, prob, label in self._groups(items):
            fig = Figure(figsize=(4.5, 4.5), dpi=90)
            ax = fig.add_subplot(1, 1, 1)
            classes = [1] if self.num_classes == 2 else range(self.num_classes)
            for c in classes:
                positives = label == c
                if positives.all() or not positives.any():
                    continue
                fpr, tpr, _ = roc_curve(positives.astype(int), prob[:, c])
                auc = roc_auc_score(positives.astype(int), prob[:, c])
                ax.plot(fpr, tpr, label=f"{self.class_names[c]} (AUC {auc:.3f})")
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.set_title(f"ROC, {title} (n={len(label)})", fontsize=8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="lower right", fontsize=7)
            fig.tight_layout()
            self.writer.add_figure(f"{self.tag_prefix}roc/{key}", fig, step)

            cm = confusion_matrix(label, prob.argmax(1), labels=list(range(self.num_classes)))
            fig = Figure(figsize=(4.5, 4.5), dpi=90)
            ax = fig.add_subplot(1, 1, 1)
            ax.imshow(cm, cmap="Blues")
            for (r, c), v in np.ndenumerate(cm):
                ax.text(c, r, str(v), ha="center", va="center", fontsize=8)
            ax.set_xticks(range(self.num_classes), self.class_names, rotation=45, fontsize=7)
            ax.set_yticks(range(self.num_classes), self.class_names, fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"confusion, {title}", fontsize=8)
            fig.tight_layout()
            self.writer.add_figure(f"{self.tag_prefix}confusion/{key}", fig, step)
