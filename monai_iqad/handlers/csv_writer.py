"""Per-image prediction CSV files (one row per image, with a header), written atomically at the end of an epoch and,
optionally, every few iterations (so a later failure never loses the rows computed before it)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_iqad.utils.dist import is_dist
from monai_iqad.utils.io import atomic_write_text

from .collector import EpochOutputCollector

__all__ = ["PredictionCSVWriter"]


def _values(v: Any) -> list[float]:
    if isinstance(v, torch.Tensor):
        return [float(x) for x in v.detach().float().reshape(-1).tolist()]
    if isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    return [float(v)]


class PredictionCSVWriter(EpochOutputCollector):
    """Write one CSV row per evaluated image: its file name and the requested output fields.

    A field whose value has several entries (e.g. the probabilities of one head) expands to one column per entry,
    named by ``column_names[field]`` or ``<field>_<i>``. A field of ``class_names`` holds a class index (e.g. the
    ``AsDiscreted(argmax=True)`` output of a head) and is written as that class's name. Fields are addressed by
    name (heads split by ``SplitHeadsd``), never by index ranges. Rows are sorted by file name so the file is
    deterministic under multi-process evaluation.

    Args:
        output_path: CSV file to write (parent folders are created).
        fields: output keys to write, e.g. ``["diagnosis_pred", "diagnosis"]``.
        column_names: per-field column names, e.g. ``{"diagnosis_pred": ["p_normal", "p_covid"]}`` or
            ``{"diagnosis": "true_diagnosis"}``.
        class_names: ``{field: [names...]}`` for fields holding a class index, written as the class name.
        image_key: output key of the image whose ``meta["filename_or_obj"]`` names the row.
        optional_fields: fields of ``fields`` that some networks do not output (e.g. the predicted quality of a
            diagnosis-only baseline): when absent from the outputs, their columns are left out. Any other missing
            field is an error.
        write_interval: when > 0, also rewrite the file (atomically) with the rows so far every ``write_interval``
            iterations, so that a crash, a kill or an unreadable file later in the run keeps the rows already
            computed. Single-process runs only (a multi-process run gathers rows at the end of the epoch).

    Raises:
        ValueError: a class index outside ``class_names[field]``, or ``column_names`` of the wrong length.
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        fields: Sequence[str] = ("pred",),
        column_names: Mapping[str, str | Sequence[str]] | None = None,
        class_names: Mapping[str, Sequence[str]] | None = None,
        image_key: str = "image",
        optional_fields: Sequence[str] = (),
        write_interval: int = 0,
    ) -> None:
        super().__init__()
        if write_interval < 0:
            raise ValueError(f"write_interval must be >= 0, got {write_interval}.")
        self.write_interval = int(write_interval)
        self.output_path = Path(output_path)
        self.fields = list(fields)
        self.column_names = dict(column_names or {})
        self.class_names = {k: [str(n) for n in v] for k, v in (class_names or {}).items()}
        self.image_key = image_key
        self.optional_fields = set(optional_fields)

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.write_interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.write_interval), self._write_partial)

    def _write_partial(self, engine: Engine) -> None:
        """Rewrite the CSV with the rows collected so far (single-process runs)."""
        if self.items and not is_dist():
            self.finalize(engine, self.items)

    def select(self, output: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any] | None:
        image = output.get(self.image_key, batch.get(self.image_key) if isinstance(batch, dict) else None)
        meta = getattr(image, "meta", None) or {}
        name = meta.get("filename_or_obj", "")
        item: dict[str, Any] = {"filename": str(name)}
        for f in self.fields:
            if f not in output and f in self.optional_fields:
                continue
            vals = _values(output[f])
            if f in self.class_names:
                names, index = self.class_names[f], round(vals[0])
                if len(vals) != 1 or not 0 <= index < len(names):
                    raise ValueError(f"'{f}' must be one class index in 0..{len(names) - 1}, got {vals}.")
                vals = [names[index]]
            item[f] = vals
        return item

    def _columns(self, field: str, n: int) -> list[str]:
        names = self.column_names.get(field)
        if isinstance(names, str):
            names = [names] if n == 1 else [f"{names}_{i}" for i in range(n)]
        if names is None:
            names = [field] if n == 1 else [f"{field}_{i}" for i in range(n)]
        if len(names) != n:
            raise ValueError(f"column_names['{field}'] has {len(names)} names for {n} values.")
        return list(names)

    def finalize(self, engine: Engine, items: Sequence[dict[str, Any]]) -> None:
        items = sorted(items, key=lambda i: i["filename"])
        fields = [f for f in self.fields if f in items[0]]
        header = ["filename"]
        for f in fields:
            header += self._columns(f, len(items[0][f]))
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        for item in items:
            row: list[Any] = [item["filename"]]
            for f in fields:
                row += [v if isinstance(v, str) else f"{v:.6g}" for v in item[f]]
            writer.writerow(row)
        atomic_write_text(self.output_path, buf.getvalue())
