"""Check that every image of an inference run can be read before the run starts: ``on_error`` ``"stop"`` or ``"skip"``.

A bundle's folder/datalist inference feeds a MONAI ``Dataset`` to an Ignite evaluator; one unreadable file raised in
a ``DataLoader`` ends the whole epoch, and the per-image CSV (written when the epoch completes) is never written. The
bundles therefore pass their item list through :func:`screen_images` first:

- every item is read once with :func:`~monai_iqad.data.read_image` (the same reader, frame and slice the pipeline
  uses; NaN/inf pixels, broken links and link loops are errors too);
- ``on_error="stop"``: the first unreadable item fails the run before any work, with the reader's message (naming
  the file) and the item index;
- ``on_error="skip"``: unreadable items are left out, each written as a row ``index,filename,error`` of
  ``errors_path`` (atomically, before the run starts, so later failures cannot lose it) and counted in a warning.

Cost: each image is decoded twice (here and in the pipeline); decoding is small next to a network forward pass on
CPU, and ``num_workers`` threads overlap it. Errors that arise after reading (in a transform or the network) are not
screened and keep stopping the run.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from monai_iqad.utils.errors import EmptyDataError, MonaiIqadError
from monai_iqad.utils.io import atomic_write_text

from .image_io import ImageReadError, read_image

__all__ = ["screen_images", "ON_ERROR"]

ON_ERROR = ("stop", "skip")
logger = logging.getLogger(__name__)


def _check(item: Mapping[str, Any], image_key: str) -> str | None:
    """None when ``item`` can be read, else the reason (the reader's message, which names the file)."""
    try:
        read_image(item[image_key], frame=item.get("frame"), slice_index=item.get("slice"))
    except (MonaiIqadError, OSError, ValueError, MemoryError) as e:
        return str(e) if isinstance(e, MonaiIqadError) else f"{item[image_key]}: {type(e).__name__}: {e}"
    return None


def screen_images(
    items: Sequence[Mapping[str, Any]],
    on_error: Literal["stop", "skip"] = "skip",
    errors_path: str | os.PathLike | None = None,
    image_key: str = "image",
    num_workers: int = 0,
) -> list[Mapping[str, Any]]:
    """The items whose image can be read; the others stop the run or are recorded and left out.

    Args:
        items: ``[{"image": path, "frame"?: int, "slice"?: int, ...}, ...]`` (from ``list_images`` or
            ``load_datalist``).
        on_error: ``"stop"``: raise on the first unreadable image. ``"skip"``: leave it out and record it.
        errors_path: CSV of the skipped items (``index,filename,error``; a header only when none was skipped),
            written atomically; None: only logged.
        image_key: key of the image path in an item.
        num_workers: threads reading images (0: in this thread).

    Returns:
        the readable items, in their original order.

    Raises:
        ImageReadError: ``on_error="stop"`` and an image cannot be read (``item`` = its index).
        EmptyDataError: ``on_error="skip"`` and no image can be read.
        ValueError: ``on_error`` is not ``"stop"`` or ``"skip"``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    items = list(items)
    if num_workers > 0 and on_error == "skip":
        with ThreadPoolExecutor(num_workers) as pool:
            problems = list(pool.map(lambda it: _check(it, image_key), items))
    else:
        problems = []
        for index, item in enumerate(items):
            problem = _check(item, image_key)
            if problem is not None and on_error == "stop":
                raise ImageReadError(problem, file=str(item[image_key]), item=index)
            problems.append(problem)
    kept = [item for item, problem in zip(items, problems) if problem is None]
    errors = [(i, str(items[i][image_key]), p) for i, p in enumerate(problems) if p is not None]
    if errors_path is not None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["index", "filename", "error"])
        writer.writerows(errors)
        atomic_write_text(errors_path, buf.getvalue())
    if errors:
        where = f" (listed in {errors_path})" if errors_path is not None else ""
        shown = "; ".join(p for _, _, p in errors[:5]) + ("; ..." if len(errors) > 5 else "")
        logger.warning(f"on_error=skip: {len(errors)} of {len(items)} image(s) cannot be read, skipped{where}: {shown}")
    if not kept and items:
        raise EmptyDataError(
            f"none of the {len(items)} image(s) can be read (first: {errors[0][2]})",
            file=errors_path,
            hint="check the input folder/datalist; every error is listed in the errors file",
        )
    return kept
