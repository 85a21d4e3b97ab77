"""TensorBoard figure: the validation images whose quality score is furthest from their MOS, with patch heat maps."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from .collector import EpochOutputCollector, as_scalar

__all__ = ["WorstImagesHandler"]


class WorstImagesHandler(EpochOutputCollector):
    """Show the ``k`` validation images with the largest ``|pred - MOS|`` and their per-patch score maps.

    Only the ``k`` worst images are kept in memory while the epoch runs. At the end, ``score_map_fn(network, x)``
    (default ``network.score_map``, SAQM's ``(1, 1, nh, nw)`` patch-score grid) is evaluated on each and drawn over
    the image (patch grid scaled to the analysed area; the dropped border is left uncovered).

    Args:
        network: the IQA network.
        k: number of images.
        pred_key: output key of the image score.
        label_key: output key of the MOS.
        image_key: output key of the image.
        score_map_fn: ``(network, x (1,C,H,W)) -> (1,1,nh,nw)`` patch scores; default ``network.score_map``.
        patch_size: size of one patch in pixels (for drawing).
        tag: TensorBoard image tag.
        kwargs: see :class:`EpochOutputCollector`.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        k: int = 8,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        score_map_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
        patch_size: int = 32,
        tag: str = "val/worst_images",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.k = int(k)
        self.pred_key, self.label_key, self.image_key = pred_key, label_key, image_key
        self.score_map_fn = score_map_fn or (lambda net, x: getattr(net, "module", net).score_map(x))
        self.patch_size = int(patch_size)
        self.tag = tag
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._count = 0

    def _reset(self, engine: Engine) -> None:
        super()._reset(engine)
        self._heap, self._count = [], 0

    def select(self, output: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any] | None:
        pred = as_scalar(output[self.pred_key])
        mos = as_scalar(output[self.label_key])
        err = abs(pred - mos)
        self._count += 1
        if len(self._heap) >= self.k and err <= self._heap[0][0]:
            return None
        image = output[self.image_key]
        meta = getattr(image, "meta", {}) or {}
        name = str(meta.get("filename_or_obj", ""))
        item = {"pred": pred, "mos": mos, "err": err, "image": image.detach().cpu(), "name": name}
        if len(self._heap) >= self.k:
            heapq.heapreplace(self._heap, (err, self._count, item))
        else:
            heapq.heappush(self._heap, (err, self._count, item))
        return None  # kept in the heap, not in self.items

    def _complete(self, engine: Engine) -> None:
        self.items = [x[2] for x in self._heap]
        super()._complete(engine)

    @torch.no_grad()
    def finalize(self, engine: Engine, items: Sequence[dict[str, Any]]) -> None:
        from matplotlib.figure import Figure

        worst = sorted(items, key=lambda i: -i["err"])[: self.k]
        if not worst:
            return
        cols = min(4, len(worst))
        rows = int(np.ceil(len(worst) / cols))
        fig = Figure(figsize=(3 * cols, 3.2 * rows), dpi=80)
        was_training = self.network.training
        self.network.eval()
        device = next(self.network.parameters()).device
        try:
            for n, item in enumerate(worst):
                img = item["image"].float()
                smap = self.score_map_fn(self.network, img[None].to(device)).float().cpu()[0, 0].numpy()
                show = img.permute(1, 2, 0).numpy()
                show = (show - show.min()) / max(float(np.ptp(show)), 1e-8)
                ax = fig.add_subplot(rows, cols, n + 1)
                ax.imshow(show if show.shape[2] == 3 else show[..., 0], cmap=None if show.shape[2] == 3 else "gray")
                nh, nw = smap.shape
                extent = (-0.5, nw * self.patch_size - 0.5, nh * self.patch_size - 0.5, -0.5)
                im = ax.imshow(smap, cmap="jet", alpha=0.35, vmin=0.0, vmax=1.0, extent=extent, interpolation="nearest")
                ax.set_xlim(-0.5, show.shape[1] - 0.5)
                ax.set_ylim(show.shape[0] - 0.5, -0.5)
                name = item["name"].rsplit("/", 1)[-1][:28]
                ax.set_title(f"{name}\npred {item['pred']:.2f} / MOS {item['mos']:.2f}", fontsize=7)
                ax.axis("off")
            fig.colorbar(im, ax=fig.axes, fraction=0.02, label="patch score")
        finally:
            self.network.train(was_training)
        self.writer.add_figure(self.tag, fig, self.global_step_transform(engine))
