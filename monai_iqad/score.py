"""``monai-iqad score``: score every image of a folder, file list or datalist with one IQA metric, into a CSV.

``monai-iqad score --metric {saqm,niqe,brisque,piqe,lapvar,blur} INPUT -o scores.csv [--workers N]
[--on_error {stop,skip}] [--bundle DIR]``

- ``INPUT``: one image, a folder (searched recursively for PNG/JPEG/BMP/TIFF, DICOM and NIfTI files, see
  :func:`monai_iqad.data.find_images`), a text file with one image path per line (relative paths are relative to the
  list's folder; blank lines and ``#`` comments are ignored), or a datalist JSON (``--key`` section; default the first
  of ``test``, ``validation``, ``training`` present; MOS values are not needed). A datalist item's ``frame``/``slice``
  keys choose the frame of a multi-frame file or the slice of a volume.
- Classic metrics (:data:`monai_iqad.metrics.NR_IQA_METRICS`) see the image as read by
  :class:`monai_iqad.transforms.LoadImage2D`, ``MONOCHROME1`` inverted, on the 0..255 scale (``--intensity``, see
  :func:`to_display_range`: by default the fixed bit-depth map for 8-bit data and a per-image min-max for deeper
  data). Colour images stay RGB; each metric reduces them to luma as its original does.
- ``saqm``: the network and the preprocessing of the bundle's ``configs/inference.json`` (``network_def``,
  ``preprocessing``), the weights ``models/model.pt`` (``torch.load(weights_only=True)``). The score is the network's
  image score in ``[0, 1]`` (higher is better). The default bundle is ``bundles/medical_saqm_iqa`` of the checkout.
  For a modality-conditioned network or a modality router (the bundle config's ``modalities``; the shipped medical
  model scores radiographs with its CR expert), each item's modality is its datalist
  ``modality`` key, else ``--modality`` (e.g. ``CT`` for a folder of CT PNGs), else the DICOM ``Modality`` tag,
  else unknown (all modality planes 0).
- The CSV has ``image,score,error`` columns, one row per input item in input order; a file that cannot be read or
  scored gets an empty score and the error (``--on_error skip``, the default), and the summary counts them.
  ``--on_error stop`` stops at the first such file and writes nothing. The CSV is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from monai_iqad.data.datalist import find_images, load_datalist
from monai_iqad.metrics.nr_iqa import NR_IQA_METRICS
from monai_iqad.utils.errors import MonaiIqadError
from monai_iqad.utils.io import atomic_write_text

__all__ = [
    "METRICS",
    "default_bundle",
    "read_input",
    "with_modality",
    "INTENSITY_MODES",
    "to_display_range",
    "NRIQAScorer",
    "SAQMScorer",
    "score_items",
    "write_scores",
    "add_score_parser",
    "run_score",
]

METRICS = ("saqm", *NR_IQA_METRICS)
DATALIST_KEYS = ("test", "validation", "training")
CSV_COLUMNS = ("image", "score", "error")


def default_bundle() -> Path:
    """``bundles/medical_saqm_iqa`` next to the installed package (a source checkout) when it has an
    ``configs/inference.json``, else ``bundles/ultrasound_saqm_iqa``."""
    bundles = Path(__file__).resolve().parents[1] / "bundles"
    medical = bundles / "medical_saqm_iqa"
    return medical if (medical / "configs" / "inference.json").is_file() else bundles / "ultrasound_saqm_iqa"


def _read_list(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file list (one image path per line), nor an image or datalist") from e
    items = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            items.append({"image": os.fspath(p if p.is_absolute() else path.parent / p)})
    return items


def read_input(path: str | os.PathLike, key: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The items to score and the files left out of a folder, from a folder, a text list or a datalist JSON.

    Returns:
        ``(items, skipped)``: ``[{"image": path, ...}]`` (datalist items keep their other keys) and, for a folder,
        ``[{"file": path, "reason": why}]`` for the files that are not image files.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a datalist without any of the sections asked for, or an invalid datalist (the message names it).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return find_images(p)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: input not found (expected a folder, a text file list or a datalist JSON)")
    from monai_iqad.data.image_io import DICOM_SUFFIXES, NIFTI_SUFFIXES, PIL_SUFFIXES

    if p.name.lower().endswith(PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES):
        return [{"image": os.fspath(p)}], []  # a single image
    if p.suffix.lower() != ".json":
        return _read_list(p), []
    with open(p, encoding="utf-8") as f:
        sections = json.load(f)
    keys = [key] if key else [k for k in DATALIST_KEYS if isinstance(sections, dict) and k in sections]
    if not keys:
        raise ValueError(f"{p}: datalist has none of the sections {', '.join(DATALIST_KEYS)}; pass --key")
    return load_datalist(p, keys[0], check_files=False, require_mos=False), []


def with_modality(items: Sequence[dict[str, Any]], modality: str) -> list[dict[str, Any]]:
    """``items`` where those without a ``modality`` key get ``modality`` (what ``--modality`` does).

    Raises:
        ValueError: ``modality`` is not one of :data:`monai_iqad.transforms.SAQM_MODALITIES` (or an alias of one).
    """
    from monai_iqad.transforms.conditioning import MODALITY_ALIASES, SAQM_MODALITIES, modality_index

    if modality_index(modality, SAQM_MODALITIES) is None:
        known = ", ".join([*SAQM_MODALITIES, *MODALITY_ALIASES])
        raise ValueError(f"--modality {modality!r} is not a known modality ({known})")
    return [{"modality": modality, **item} for item in items]


def _error_text(e: BaseException) -> str:
    """``e``, unwrapped from MONAI's ``RuntimeError: applying transform ...`` around a transform's own error."""
    while isinstance(e, RuntimeError) and str(e).startswith("applying transform") and e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {e}".replace("\n", " ")


INTENSITY_MODES = ("auto", "bitdepth", "minmax")


def to_display_range(image: Any, mode: str = "auto") -> torch.Tensor:
    """Map a ``MetaTensor`` from :class:`monai_iqad.transforms.LoadImage2D` to the 0..255 range of an 8-bit display.

    ``MONOCHROME1`` is inverted first. ``bitdepth``: the fixed stored range (:func:`stored_value_range`, e.g. 0..255
    for 8-bit PNG, 0..65535 for 16-bit) is mapped to 0..255 and clipped: the stored contrast is kept. ``minmax``: the
    image's own minimum..maximum is mapped to 0..255. ``auto`` (default): ``bitdepth`` for data of at most 8 stored
    bits (or an unknown depth), ``minmax`` for deeper data (12/16-bit CR, CT in HU, 16-bit PNG), which the fixed
    map would squeeze into a few gray levels; the NSS models of NIQE/BRISQUE were fitted on displayed 8-bit images.

    Returns:
        ``(C, H, W)`` float tensor in ``[0, 255]``.

    Raises:
        ValueError: unknown ``mode``.
    """
    from monai_iqad.transforms.intensity import InvertMonochrome1, image_meta, stored_value_range

    if mode not in INTENSITY_MODES:
        raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got {mode!r}")
    meta = dict(image_meta(image))
    image = InvertMonochrome1()(image)
    x = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    x = x.to(torch.float64)
    bits = meta.get("bits_stored")
    if mode == "minmax" or (mode == "auto" and (meta.get("rescale") or (bits is not None and int(bits) > 8))):
        lo, hi = float(x.min()), float(x.max())
        hi = hi if hi > lo else lo + 1.0
    else:
        lo, hi = stored_value_range(meta, 8)
    return ((x - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0


class NRIQAScorer:
    """Score one item with a classic NR-IQA metric (picklable, for worker processes).

    Args:
        metric: a key of :data:`monai_iqad.metrics.NR_IQA_METRICS`.
        intensity: how stored values become 0..255 (see :func:`to_display_range`).

    Raises:
        ValueError: unknown metric or intensity mode.
    """

    def __init__(self, metric: str, intensity: str = "auto") -> None:
        if metric not in NR_IQA_METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(NR_IQA_METRICS)}")
        if intensity not in INTENSITY_MODES:
            raise ValueError(f"intensity mode must be one of {INTENSITY_MODES}, got {intensity!r}")
        self.metric = metric
        self.intensity = intensity

    def __call__(self, item: dict[str, Any]) -> float:
        from monai_iqad.transforms import LoadImage2D

        image = LoadImage2D()(item["image"], frame=item.get("frame"), slice_index=item.get("slice"))
        return float(NR_IQA_METRICS[self.metric](to_display_range(image, self.intensity), data_range=255.0))


class SAQMScorer:
    """Score one item with the SAQM network of a bundle (image score in ``[0, 1]``, higher is better).

    Args:
        bundle: bundle folder with ``configs/<config>`` and ``models/model.pt``.
        config: the config file that defines ``network_def`` and ``preprocessing``, or several (a sequence, or names
            separated by commas) merged in order like ``monai.bundle run --config_file``, e.g.
            ``"inference.json,single_saqm.json"`` to score one SAQM with the medical bundle's preprocessing.
        device: torch device for the network.

    Raises:
        FileNotFoundError: the config or the weights are missing (the message names the file).
        monai_iqad.utils.CheckpointError: the weights file is damaged, empty, not a checkpoint or holds objects a
            safe load refuses (names the file).
        ValueError: the weights do not fit the network.
    """

    def __init__(
        self, bundle: str | os.PathLike, config: str | Sequence[str] = "inference.json", device: str = "cpu"
    ) -> None:
        from monai.bundle import ConfigParser

        root = Path(bundle).expanduser().resolve()
        names = [c.strip() for c in config.split(",")] if isinstance(config, str) else list(config)
        cfgs = [root / "configs" / name for name in names if name]
        cfg = ", ".join(os.fspath(c) for c in cfgs)
        weights = root / "models" / "model.pt"
        for f, what in (*((c, "bundle config") for c in cfgs), (weights, "SAQM weights")):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: {what} not found (--bundle {root})")
        parser = ConfigParser()
        parser.read_config([os.fspath(c) for c in cfgs])
        parser["bundle_root"] = os.fspath(root)
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.network = parser.get_parsed_content("network_def").to(device).eval()
        from monai_iqad.handlers.checkpoint_loader import load_weights

        state = load_weights(weights, device)  # a damaged, text or unsafe file: an error that names it
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        try:
            self.network.load_state_dict(state)
        except RuntimeError as e:
            from monai_iqad.networks import SAQMRouter

            fix = ""
            if isinstance(self.network, SAQMRouter) and not SAQMRouter.is_state_dict(state):
                fix = " (one SAQM's weights for a router config: add --config inference.json,single_saqm.json)"
            raise ValueError(f"{weights}: weights do not fit the network of {cfg}{fix}: {e}") from e
        self.device = device

    @torch.no_grad()
    def __call__(self, item: dict[str, Any]) -> float:
        x = self.preprocessing(dict(item))["image"]
        x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
        return float(self.network(x[None].to(self.device)).reshape(-1)[0])


def _score_one(scorer: Callable[[dict], float], item: dict[str, Any]) -> tuple[float | None, str]:
    try:
        return scorer(item), ""
    except Exception as e:  # one bad file must not stop the run (--on_error skip)
        return None, _error_text(e)


def _init_worker() -> None:
    torch.set_num_threads(1)


def _scored(
    scorer: Callable[[dict], float], items: Sequence[dict[str, Any]], workers: int
) -> Iterator[tuple[float | None, str]]:
    if workers <= 1:
        for item in items:
            yield _score_one(scorer, item)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
        yield from pool.map(_score_one, [scorer] * len(items), items, chunksize=max(1, len(items) // (8 * workers)))


class _SimpleBar:
    """Progress on stderr without tqdm: a line every ~2 s and at the end."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n, self.last = total, desc, 0, 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last > 2 or self.n == self.total:
            self.last = now
            print(f"{self.desc}: {self.n}/{self.total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="img", file=sys.stderr)
    except ImportError:
        return _SimpleBar(total, desc)


def score_items(
    items: Sequence[dict[str, Any]],
    scorer: Callable[[dict], float],
    workers: int = 1,
    on_error: str = "skip",
    progress: bool = True,
    desc: str = "score",
) -> list[dict[str, Any]]:
    """Score ``items`` in order; one row ``{"image", "score", "error"}`` per item.

    Args:
        items: ``[{"image": path, ...}]``.
        scorer: ``scorer(item) -> float`` (picklable when ``workers > 1``).
        workers: processes (1: in this process).
        on_error: ``skip``: a failing item gets ``score = None`` and its error; ``stop``: raise at the first one.
        progress: show a progress bar on stderr (tqdm when installed, else a line every few seconds).

    Raises:
        ValueError: ``on_error`` is not ``skip``/``stop``, or (``stop``) an item failed; the message names the file.
    """
    if on_error not in ("skip", "stop"):
        raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    bar = _progress(len(items), desc, progress)
    rows = []
    try:
        for item, (score, error) in zip(items, _scored(scorer, items, workers), strict=True):
            if error and on_error == "stop":
                raise ValueError(f"{item['image']}: {error}")
            rows.append({"image": os.fspath(item["image"]), "score": score, "error": error})
            bar.update(1)
    finally:
        bar.close()
    return rows


def write_scores(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``rows`` as CSV (``image,score,error``; scores with full precision, empty when missing), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        score = row["score"]
        writer.writerow({**row, "score": "" if score is None else repr(float(score))})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, buf.getvalue())


def add_score_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``score`` subcommand to the ``monai-iqad`` parser."""
    p = sub.add_parser(
        "score",
        help="score a folder / file list / datalist of images with one IQA metric into a CSV",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("input", help="folder (recursive), text file list (one path per line) or datalist JSON")
    p.add_argument("--metric", required=True, choices=METRICS, help="saqm (a bundle's network) or a classic metric")
    p.add_argument("-o", "--output", default="scores.csv", help="CSV to write (default scores.csv)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--on_error", "--on-error", dest="on_error", choices=("stop", "skip"), default="skip")
    p.add_argument("--bundle", default=None, help=f"SAQM bundle folder (default {default_bundle()})")
    p.add_argument(
        "--config",
        default="inference.json",
        help="SAQM bundle config(s), comma-separated overlays merged in order (default inference.json)",
    )
    p.add_argument("--device", default="cpu", help="SAQM device (default cpu)")
    p.add_argument(
        "--intensity",
        choices=INTENSITY_MODES,
        default="auto",
        help="classic metrics: stored values -> 0..255 (auto: bit depth up to 8 bits, else per-image min-max)",
    )
    p.add_argument(
        "--modality",
        default=None,
        help="saqm: modality of items that do not name one (CR, CT, MR, US, fundus, natural; DICOM codes DX, OP...)",
    )
    p.add_argument("--key", default=None, help="datalist section (default: first of test, validation, training)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run_score)
    return p


def run_score(args: argparse.Namespace) -> int:
    """Run ``monai-iqad score``; returns the exit code (0 even when some files failed with ``--on_error skip``;
    2 when the input, the bundle or the metric cannot be used at all; 1 when ``--on_error stop`` hit a bad file)."""
    if args.workers < 1:
        print(f"--workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        items, skipped = read_input(args.input, args.key)
        if not items:
            raise ValueError(f"{args.input}: no image to score")
        if args.modality is not None:
            items = with_modality(items, args.modality)
        if args.metric == "saqm":
            scorer: Callable[[dict], float] = SAQMScorer(args.bundle or default_bundle(), args.config, args.device)
            lower_better = False
        else:
            scorer = NRIQAScorer(args.metric, args.intensity)
            lower_better = NR_IQA_METRICS[args.metric].lower_better
    except (OSError, ValueError, MonaiIqadError) as e:  # e.g. a damaged model.pt (CheckpointError)
        print(f"monai-iqad score: {e}", file=sys.stderr)
        if isinstance(e, MonaiIqadError):
            print(f"hint: {e.hint}", file=sys.stderr)
        return 2
    try:
        rows = score_items(items, scorer, args.workers, args.on_error, args.progress, desc=args.metric)
    except ValueError as e:
        print(f"monai-iqad score: stopped (--on_error stop): {e}", file=sys.stderr)
        return 1
    out = write_scores(rows, args.output)
    errors = [r for r in rows if r["error"]]
    scores = [r["score"] for r in rows if r["score"] is not None and math.isfinite(r["score"])]
    direction = "lower is better" if lower_better else "higher is better"
    print(
        f"{args.metric} ({direction}): scored {len(rows) - len(errors)} of {len(rows)} image(s), {len(errors)} error(s)"
    )
    if scores:
        print(f"  mean {sum(scores) / len(scores):.4g}, min {min(scores):.4g}, max {max(scores):.4g}")
    undefined = len(rows) - len(errors) - len(scores)
    if undefined:
        print(f"  {undefined} score(s) undefined (nan: e.g. a constant image)")
    for r in errors[:10]:
        print(f"  error: {r['image']}: {r['error']}")
    if len(errors) > 10:
        print(f"  ... and {len(errors) - 10} more error(s) in {out}")
    if skipped:
        print(f"  {len(skipped)} non-image file(s) in the folder were not scored (e.g. {skipped[0]['file']})")
    print(f"wrote {out}")
    return 0
