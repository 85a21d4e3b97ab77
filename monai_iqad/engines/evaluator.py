"""An evaluator for batches with named keys and networks with several heads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from monai_iqad.engines.step import amp_settings, autocast, to_loss_dtype

__all__ = ["MultiOutputEvaluator"]


class MultiOutputEvaluator(SupervisedEvaluator):
    """``SupervisedEvaluator`` reading ``image_key``/``label_key`` from dict batches, for single- or multi-head nets.

    ``engine.state.output`` holds ``image``, ``label`` (``batch[label_key]``), ``pred`` and:

    - for a network returning a dict (e.g. MKCNet ``{"diagnosis", "quality", "auxiliary"}``), ``pred`` is the whole
      dict when ``pred_key`` is None (the heads are then named by the postprocessing,
      :class:`monai_iqad.transforms.SplitHeadsd`), else ``out[pred_key]``, and each ``extra_outputs`` entry
      ``{output_name: head_name}`` is copied;
    - each of ``batch_keys`` copied from the batch (e.g. the ``quality`` grade used for per-grade metrics, or the
      ``mos`` of an IQA sample), so Ignite metrics, which only see the output, can use them.

    After MONAI's decollation every per-sample output dict therefore has everything the metrics and figure handlers
    need. Other arguments are those of ``monai.engines.SupervisedEvaluator``.

    Args:
        image_key: batch key of the input image ``(B, C, H, W)``.
        label_key: batch key of the target (``"mos"`` for IQA, ``"diagnosis"`` for IQAD).
        pred_key: head used as ``pred`` when the network returns a dict; None keeps the dict of heads.
        extra_outputs: other heads to expose, ``{output_name: head_name}``.
        batch_keys: batch entries copied to the output.
        amp_dtype: ``"bfloat16"``/``"float16"``: autocast on any device with that dtype, network outputs cast back to
            float32 (None: MONAI's ``amp``, CUDA only). Defaults to None.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str | None = "diagnosis",
        extra_outputs: Mapping[str, str] | None = None,
        batch_keys: Sequence[str] = (),
        amp_dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        amp, amp_kwargs = amp_settings(kwargs.pop("amp", False), kwargs.pop("amp_kwargs", None), amp_dtype)
        kwargs.update(amp=amp, amp_kwargs=amp_kwargs)
        super().__init__(device=device, val_data_loader=val_data_loader, network=network, **kwargs)
        self.image_key = image_key
        self.label_key = label_key
        self.pred_key = pred_key
        self.extra_outputs = dict(extra_outputs or {})
        self.batch_keys = list(batch_keys)

    def _iteration(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if self.image_key not in batchdata:
            raise KeyError(f"Batch has no '{self.image_key}' entry (keys: {sorted(batchdata)}).")
        device = engine.state.device
        to = {"device": device, "non_blocking": engine.non_blocking}
        inputs = batchdata[self.image_key].to(**to)
        label = batchdata.get(self.label_key)
        if isinstance(label, torch.Tensor):
            label = label.to(**to)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: label}
        forward: Callable[..., Any] = engine.inferer
        with engine.mode(engine.network), autocast(engine):
            out = forward(inputs, engine.network)
        if "dtype" in engine.amp_kwargs:  # amp_dtype: metrics and writers get float32
            out = {k: to_loss_dtype(v) for k, v in out.items()} if isinstance(out, Mapping) else to_loss_dtype(out)
        if isinstance(out, Mapping) and self.pred_key is not None:
            if self.pred_key not in out:
                raise KeyError(f"Network output has no '{self.pred_key}' head (heads: {sorted(out)}).")
            engine.state.output[Keys.PRED] = out[self.pred_key]
            for name, head in self.extra_outputs.items():
                engine.state.output[name] = out[head]
        else:
            engine.state.output[Keys.PRED] = out
        for k in self.batch_keys:
            v = batchdata[k]
            engine.state.output[k] = v.to(**to) if isinstance(v, torch.Tensor) else v
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
