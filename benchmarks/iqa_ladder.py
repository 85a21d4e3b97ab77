"""Distortion-ladder benchmark: the shipped SAQM against the classic NR-IQA metrics on held-out corpus sources.

``python benchmarks/iqa_ladder.py [--corpus DIR] [--model PATH] [--split test] [--bf16]`` scores every unique image
of a split of the pretraining corpus (built with seed 0 when ``--corpus`` does not exist) with SAQM and with every
metric of ``monai_iqad.metrics.NR_IQA_METRICS`` available in this checkout, in one run, and reports:

- **within-ladder SROCC**: for every ladder (one pristine crop, one distortion family, levels 0..5), the Spearman
  correlation between the score (oriented so that higher = better: lower-better metrics are negated) and
  ``-level``; averaged per distortion x modality, per distortion and overall (a constant score on a ladder counts
  as 0);
- **PLCC / SROCC against the pseudo-MOS** (SSIM against the pristine) over all unique images of the split;
- the spread of the SAQM scores; SAQM speed (images/s at 512x512, fp32 and bf16 autocast; ``--no-speed`` skips
  it) and each metric's time;
- 95 % intervals: a cluster bootstrap over the split's *source images* (``--bootstrap`` replicates; every ladder cut
  from one source is drawn together; ``--cluster crop``: over pristine crops) of every method's mean within-ladder
  SROCC, of each SAQM model's paired margin over the best classic metric, and of each SAQM model's mean per distortion
  and its paired difference from ``--model``'s.
- the (source image, distortion) cells where a SAQM model is below ``--select-floor``, with the pristine's rank in
  each ladder and the ladders where level 1 scores above the pristine (:func:`_source_breakdown`: which image and
  which end of the ladder make a family fail).

Writes its section (between ``<!-- iqa_ladder:start -->`` and ``<!-- iqa_ladder:end -->``) of ``docs/results_iqa.md``,
keeping the hand-written analysis around it, and a PNG (mean normalised score vs level, one panel per distortion)
with matplotlib.

``--select 'DIR/model_epoch=*.pt' --select-out PATH`` is the checkpoint-selection mode instead: it scores the split
(use ``--split validation``) with every matching SAQM checkpoint, prints each one's mean within-ladder SROCC and
copies the best one's weights to ``PATH`` (the issue's metric, measured on validation sources only).
``--soup A.pt B.pt ... --soup-out PATH`` builds a greedy model soup on the split instead (:func:`_greedy_soup`), and
``--ensemble A.pt B.pt ... --ensemble-out PATH`` a prediction ensemble of the checkpoints (:func:`_ensemble`). A saved
ensemble (``SAQMEnsemble`` state dict) can be ``--model`` or ``--compare`` like any checkpoint.
``--router E0.pt E1.pt A.pt+B.pt --route CR=1 MR=2 --router-out PATH`` writes a modality router (:func:`_router`);
an expert joined by ``+`` is the prediction ensemble of those checkpoints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_utils import cluster_bootstrap_means, markdown_table, write_section  # noqa: E402

from monai_iqad.data import load_datalist  # noqa: E402
from monai_iqad.demo.pretrain_corpus import build_pretrain_corpus, unique_items  # noqa: E402
from monai_iqad.networks import SAQM, SAQMEnsemble, SAQMRouter  # noqa: E402
from monai_iqad.transforms import (  # noqa: E402
    SAQM_MODALITIES,
    LocalContrastNormalize,
    ModalityChannels,
    saqm_preprocessing,
)
from monai_iqad.utils import native_cpu_bf16  # noqa: E402


def _classic_metrics() -> dict:
    """The classic metric registry of this checkout (empty when the module is absent)."""
    try:
        from monai_iqad.metrics import NR_IQA_METRICS
    except ImportError as err:  # pragma: no cover - depends on the checkout
        print(f"no classic metrics: {err}")
        return {}
    return dict(NR_IQA_METRICS)


def _load_saqm(path: Path, width: float) -> SAQM | SAQMEnsemble | SAQMRouter:
    """A SAQM checkpoint, a :class:`SAQMEnsemble` one (keys ``members.k.*``) or a :class:`SAQMRouter` one (keys
    ``route``, ``experts.k.*``); the input channels (3, + 2 contrast-context planes, + modality planes) are read from
    the first convolution."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if SAQMRouter.is_state_dict(state):
        return SAQMRouter.from_state_dict(state, width=width).eval()
    if SAQMEnsemble.members_of(state):
        return SAQMEnsemble.from_state_dict(state, width=width).eval()
    net = SAQM(in_channels=int(state["attention.query.0.weight"].shape[1]), width=width)
    net.load_state_dict(state)
    return net.eval()


def _preprocess(paths: list[str]) -> list[torch.Tensor]:
    """The SAQM inputs ``(1, 5, H, W)`` of ``paths``: the 3 normalised channels and the 2 contrast-context planes
    (read and normalised once, reused by every checkpoint; :func:`_score_saqm` drops the planes a network lacks)."""
    pre = saqm_preprocessing(train=False, mos_range=(0.0, 1.0), contrast_context=True)
    return [torch.as_tensor(pre({"image": p})["image"]).float()[None] for p in paths]


def _score_saqm(
    net: SAQM | SAQMEnsemble, inputs: list[torch.Tensor], bf16: bool, modalities: list[str | None] | None = None
) -> np.ndarray:
    """Image scores of ``net`` on preprocessed ``inputs`` (see :func:`_preprocess`). A network with 3 + 2 (or 3 + 2 +
    modality) input channels gets the contrast-context planes; a modality-conditioned ``net`` gets the one-hot
    planes of ``modalities`` (``None``: unknown)."""
    extra, n_ctx, n_mod = net.in_channels - 3, LocalContrastNormalize.CONTEXT_CHANNELS, len(SAQM_MODALITIES)
    if extra not in (0, n_ctx, n_mod, n_ctx + n_mod):
        raise ValueError(
            f"SAQM with {net.in_channels} input channels: expected 3 (+ {n_ctx} context planes) "
            f"(+ {n_mod} modality planes)."
        )
    keep = 3 + (n_ctx if extra in (n_ctx, n_ctx + n_mod) else 0)
    planes = ModalityChannels(SAQM_MODALITIES) if extra >= n_mod else None
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i, x in enumerate(inputs):
            x = x[:, :keep]
            if planes is not None:
                x = planes(x[0], modalities[i] if modalities else None)[None]
            out.append(float(net(x).float()))
    return np.asarray(out)


def _score_classic(metric, paths: list[str]) -> tuple[np.ndarray, float]:
    values, start = [], time.perf_counter()
    for p in paths:
        arr = np.asarray(Image.open(p), dtype=np.float32)
        img = torch.as_tensor(arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0))
        try:
            v = metric(img, data_range=255.0)
            v = float(torch.as_tensor(v).reshape(-1)[0])
        except Exception as err:  # a metric that cannot score an image counts as NaN, reported below
            print(f"{metric.name} failed on {p}: {err}")
            v = float("nan")
        values.append(-v if metric.lower_better else v)
    return np.asarray(values), (time.perf_counter() - start) / max(len(paths), 1)


def _srocc(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0 or not np.isfinite(a).all():
        return 0.0
    return float(stats.spearmanr(a, b)[0])


def _ladder_values(
    items: list[dict], index: dict[str, int], scores: dict[str, np.ndarray]
) -> tuple[list[str], dict[str, tuple[str, str]], dict[str, np.ndarray]]:
    """Within-ladder SROCC of every method on every ladder.

    Returns:
        The ladder names, ``{ladder: (distortion, modality)}`` and ``{method: (L,) SROCC per ladder}``.
    """
    ladders: dict[str, list[tuple[int, int]]] = defaultdict(list)
    meta: dict[str, tuple[str, str]] = {}
    for it in items:
        ladders[it["ladder"]].append((int(it["level"]), index[str(it["image"])]))
        meta[it["ladder"]] = (it["distortion"], it["modality"])
    names = list(ladders)
    values = {m: np.zeros(len(names)) for m in scores}
    for k, ladder in enumerate(names):
        levels = np.asarray([lv for lv, _ in ladders[ladder]], dtype=float)
        idx = [i for _, i in ladders[ladder]]
        for m, s in scores.items():
            values[m][k] = _srocc(s[idx], -levels)
    return names, meta, values


def _ladder_srocc(
    items: list[dict], index: dict[str, int], scores: dict[str, np.ndarray]
) -> tuple[dict[str, dict[tuple[str, str], list[float]]], dict[str, tuple[str, str]]]:
    """Within-ladder SROCC of every method, grouped by (distortion, modality).

    Returns:
        ``{method: {(distortion, modality): [SROCC of each ladder]}}`` and ``{ladder: (distortion, modality)}``.
    """
    names, meta, values = _ladder_values(items, index, scores)
    return _by_cell(names, meta, values), meta


def _by_cell(
    names: list[str], meta: dict[str, tuple[str, str]], values: dict[str, np.ndarray]
) -> dict[str, dict[tuple[str, str], list[float]]]:
    """Per-ladder values (:func:`_ladder_values`) grouped as ``{method: {(distortion, modality): [values]}}``."""
    per_cell: dict[str, dict[tuple[str, str], list[float]]] = {m: defaultdict(list) for m in values}
    for m, vals in values.items():
        for ladder, v in zip(names, vals):
            per_cell[m][meta[ladder]].append(float(v))
    return per_cell


def _intervals(
    names: list[str],
    meta: dict[str, tuple[str, str]],
    values: dict[str, np.ndarray],
    sources: dict[str, str],
    saqm: list[str],
    classic: list[str],
    num_boot: int,
    unit: str = "source",
) -> list[str]:
    """Markdown: 95 % cluster-bootstrap intervals (clusters: ``sources``, the source image of each ladder, or with
    ``unit="crop"`` its pristine crop) of the mean within-ladder SROCC (every method), of
    the SAQM models' margin over the best classic metric and of their difference from the first SAQM model, and of
    each SAQM model's mean per distortion and its difference from the first SAQM model's."""
    methods = list(values)
    table = np.stack([values[m] for m in methods], axis=1)
    clusters = [sources[n] for n in names]
    reps = cluster_bootstrap_means(table, clusters, num_boot)
    lo, hi = np.percentile(reps, [2.5, 97.5], axis=0)
    means = table.mean(axis=0)
    if unit == "crop":
        text = (
            f"Percentile intervals of a cluster bootstrap over the {len(set(clusters))} held-out pristine crops "
            f"({num_boot:,} replicates, seed 0, `--cluster crop`): every ladder of one crop is drawn together. Crops "
            "of one image share its content (and may overlap), so these intervals are optimistic: read them as the "
            "spread a different draw of crops and distortion noise could give, not a different image."
        )
    else:
        text = (
            f"Percentile intervals of a cluster bootstrap over the {len(set(clusters))} held-out source images "
            f"({num_boot:,} replicates, seed 0): every ladder cut from one source is drawn together, so the crops and "
            "distortions of one image are not counted as independent evidence. With this few sources the intervals "
            "are wide: read them as the spread a different draw of test images could give."
        )
    lines = [
        "## Uncertainty (95 % intervals)",
        "",
        text,
        "",
        "| method | mean within-ladder SROCC | 95 % interval |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {means[k]:.3f} | [{lo[k]:.3f}, {hi[k]:.3f}] |" for k, m in enumerate(methods)]

    def paired(m: str, ref: str) -> tuple[str, np.ndarray]:
        """Table cells of ``m - ref`` (difference of means | its interval; same replicates for both, so paired) and
        the per-replicate differences."""
        diff = reps[:, methods.index(m)] - reps[:, methods.index(ref)]
        d_lo, d_hi = np.percentile(diff, [2.5, 97.5])
        gap = means[methods.index(m)] - means[methods.index(ref)]
        return f"{gap:+.3f} | [{d_lo:+.3f}, {d_hi:+.3f}]", diff

    if classic:
        best = max(classic, key=lambda m: means[methods.index(m)])
        lines += ["", f"Margin over the best classic metric of this run ({best}), paired (same replicates):", ""]
        lines += [
            "| SAQM model | margin | 95 % interval | share of replicates with margin >= 0.10 |",
            "|---|---|---|---|",
        ]
        for m in saqm:
            cells, diff = paired(m, best)
            lines.append(f"| {m} | {cells} | {np.mean(diff >= 0.10):.2f} |")
    if len(saqm) > 1:
        ref = saqm[0]
        lines += ["", f"Difference from `{ref}` (the model given by `--model`), paired (same replicates):", ""]
        lines += ["| SAQM model | difference | 95 % interval | share of replicates > 0 |", "|---|---|---|---|"]
        for m in saqm[1:]:
            cells, diff = paired(m, ref)
            lines.append(f"| {m} | {cells} | {np.mean(diff > 0):.2f} |")
    distortions = sorted({d for d, _ in meta.values()})
    keep_of = {d: [k for k, n in enumerate(names) if meta[n][0] == d] for d in distortions}
    lines += ["", f"Per distortion (SAQM models; ladders / {unit}s):", ""]
    lines += [f"| distortion | ladders / {unit}s | " + " | ".join(saqm) + " |", "|---|---|" + "---|" * len(saqm)]
    for d in distortions:
        keep = keep_of[d]
        sub = [clusters[k] for k in keep]
        cells = []
        for m in saqm:
            v = values[m][keep]
            r_lo, r_hi = np.percentile(cluster_bootstrap_means(v, sub, num_boot), [2.5, 97.5])
            cells.append(f"{v.mean():.3f} [{r_lo:.3f}, {r_hi:.3f}]")
        lines.append(f"| {d} | {len(keep)} / {len(set(sub))} | " + " | ".join(cells) + " |")
    if len(saqm) > 1:
        ref = saqm[0]
        lines += ["", f"Per distortion, difference from `{ref}`, paired (the same {unit}s drawn for both models):", ""]
        lines += ["| distortion | " + " | ".join(saqm[1:]) + " |", "|---|" + "---|" * len(saqm[1:])]
        for d in distortions:
            keep = keep_of[d]
            sub = [clusters[k] for k in keep]
            cells = []
            for m in saqm[1:]:
                diff = values[m][keep] - values[ref][keep]
                r_lo, r_hi = np.percentile(cluster_bootstrap_means(diff, sub, num_boot), [2.5, 97.5])
                cells.append(f"{diff.mean():+.3f} [{r_lo:+.3f}, {r_hi:+.3f}]")
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return lines + [""]


#: Families whose label assumes a correctly exposed pristine (the exposure is what they degrade).
EXPOSURE_FAMILIES = ("gamma", "low_contrast", "uneven_illumination")
#: A pristine has clipped highlights when at least this share of its 8-bit luminance is >= :data:`CLIP_LEVEL`.
CLIPPED_SHARE = 0.05
CLIP_LEVEL = 243  # 0.95 * 255, rounded up


def clipped_share(path: str) -> float:
    """Share of the pixels of an image file whose 8-bit luminance is at least :data:`CLIP_LEVEL`."""
    with Image.open(path) as img:
        lum = np.asarray(img.convert("L"))
    return float((lum >= CLIP_LEVEL).mean())


def _exposure_split(
    items: list[dict], names: list[str], meta: dict[str, tuple[str, str]], values: dict[str, np.ndarray]
) -> list[str]:
    """Markdown: mean within-ladder SROCC of the exposure families (:data:`EXPOSURE_FAMILIES`) on ladders whose
    pristine has clipped highlights (:func:`clipped_share` >= :data:`CLIPPED_SHARE`) and on the others.

    A gamma > 1 ladder ranks "darker is worse", which holds for a correctly exposed pristine. A pristine whose
    highlights are clipped (a CT in a lung window, a skull-stripped T1 windowed at its 99.5th percentile) gains visible
    contrast in them under gamma, so there the ladder's order is not a quality order. The split is reported, not used
    by any rule or target.
    """
    pristine = {it["ladder"]: str(it["image"]) for it in items if int(it["level"]) == 0}
    wanted = [n for n in names if meta[n][0] in EXPOSURE_FAMILIES and n in pristine]
    by_image = {path: clipped_share(path) for path in {pristine[n] for n in wanted}}  # a crop's ladders share it
    share = {n: by_image[pristine[n]] for n in wanted}
    if not share:
        return []
    methods = list(values)
    lines = [
        "## Exposure families by the pristine's clipped highlights",
        "",
        f"Ladders of {', '.join(EXPOSURE_FAMILIES)} split by whether the pristine crop has clipped highlights (at "
        f"least {CLIPPED_SHARE:.0%} of its 8-bit luminance >= {CLIP_LEVEL}). These families degrade the exposure and "
        "assume the pristine is exposed correctly; with clipped highlights a gamma > 1 can reveal contrast, so the "
        "ladder's order is not a quality order there. Reported only: no rule or target uses this split.",
        "",
        "| distortion | pristine | ladders (modalities) | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for fam in EXPOSURE_FAMILIES:
        for label, clipped in (("clipped", True), ("not clipped", False)):
            keep = [
                k
                for k, n in enumerate(names)
                if n in share and meta[n][0] == fam and (share[n] >= CLIPPED_SHARE) == clipped
            ]
            if not keep:
                continue
            mods = ", ".join(sorted({meta[names[k]][1] for k in keep}))
            cells = " | ".join(f"{values[m][keep].mean():.3f}" for m in methods)
            lines.append(f"| {fam} | {label} | {len(keep)} ({mods}) | {cells} |")
    return lines + [""]


#: Severity bands of :func:`_severity_split`: the pristine with the mild levels, and the pristine with the strong ones.
SEVERITY_BANDS = (("mild (0-2)", (0, 1, 2)), ("strong (0, 3-5)", (0, 3, 4, 5)))


def _severity_split(items: list[dict], index: dict[str, int], scores: dict[str, np.ndarray]) -> list[str]:
    """Markdown: mean within-ladder SROCC per distortion on the mild levels only and on the strong levels only
    (:data:`SEVERITY_BANDS`, each with the pristine).

    A family's mean over six levels can be decided by the order of the pristine and the mild levels, where a real
    pristine may already hold the distortion (the native speckle of an ultrasound image) or a mild level may change
    nothing (Gibbs ringing that keeps more k-space than was acquired). The split shows where a method's order breaks.
    Reported only: no rule or target uses it.
    """
    methods = list(scores)
    distortions = sorted({it["distortion"] for it in items})
    lines = [
        "## Within-ladder SROCC by severity band",
        "",
        "Mean within-ladder SROCC per distortion on the pristine with levels 1-2 (mild) and on the pristine with "
        "levels 3-5 (strong). A family whose mild band is near 0 while its strong band is high is ranked by the size "
        "of the distortion, not by its presence. Reported only: no rule or target uses this split.",
        "",
        "| distortion | levels | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    bands = [
        (label, *_ladder_values([it for it in items if int(it["level"]) in lv], index, scores))
        for label, lv in SEVERITY_BANDS
    ]
    for d in distortions:
        for label, names, meta, values in bands:
            keep = [k for k, n in enumerate(names) if meta[n][0] == d]
            if keep:
                lines.append(
                    f"| {d} | {label} | " + " | ".join(f"{values[m][keep].mean():.3f}" for m in methods) + " |"
                )
    return lines + [""]


def _source_breakdown(
    items: list[dict],
    index: dict[str, int],
    scores: dict[str, np.ndarray],
    ladder_names: list[str],
    ladder_values: dict[str, np.ndarray],
    models: list[str],
    floor: float,
) -> list[str]:
    """Markdown: the (source image, distortion) cells where a SAQM model's mean within-ladder SROCC is below
    ``floor``, with where its pristine lands.

    A family's mean over several source images can hide that one image fails. Each cell gives, per model, the mean
    within-ladder SROCC over the source's ladders of that family (from ``ladder_values``, :func:`_ladder_values`),
    the pristine's rank in each ladder (1 = no distorted level scored above it; ``-`` for a ladder without a level 0)
    and on how many ladders level 1 scores above the pristine (a mild level scored as better than the undistorted
    image). Reported only: no rule or target uses it.
    """
    position = {name: k for k, name in enumerate(ladder_names)}
    images: dict[str, dict[int, int]] = defaultdict(dict)
    cells: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for it in items:
        ladder = it["ladder"]
        if not images[ladder]:
            cells[(str(it.get("source", ladder.split("/")[0])), it["modality"], it["distortion"])].append(ladder)
        images[ladder][int(it["level"])] = index[str(it["image"])]
    rows = []
    for (source, modality, dist), names in sorted(cells.items()):
        entries = []
        for m in models:
            s = scores[m]
            ranks = [
                str(1 + sum(s[i] > s[lv[0]] for k, i in lv.items() if k)) if 0 in lv else "-"
                for lv in (images[n] for n in names)
            ]
            above = sum(0 in lv and 1 in lv and s[lv[1]] > s[lv[0]] for lv in (images[n] for n in names))
            mean = float(np.mean([ladder_values[m][position[n]] for n in names]))
            entries.append((mean, f"{mean:.3f} (ranks {'/'.join(ranks)}; L1 above {above})"))
        if min(mean for mean, _ in entries) < floor:
            rows.append([source, modality, dist, len(names), *(text for _, text in entries)])
    headers = ["source", "modality", "distortion", "ladders", *models]
    if not rows:
        rows = [[f"(none: every cell is at or above {floor})", *[""] * (len(headers) - 1)]]
    return [
        f"## Per held-out source, where a SAQM model is below {floor}",
        "",
        f"Cells (source image x distortion) where a SAQM model's mean within-ladder SROCC is below {floor} "
        "(`--select-floor`). Each entry: the mean, the pristine's rank in each ladder (1 = above every distorted "
        "level) and the ladders where level 1 scores above the pristine. Reported only: no rule or target uses it.",
        "",
        markdown_table(headers, rows),
        "",
    ]


def _rule_breaks(per_family: dict[str, float], reference: dict[str, float], max_drop: float, floor: float) -> list[str]:
    """The families where ``per_family`` breaks the shipping rule against ``reference``: a loss of more than
    ``max_drop``, or a fall below ``floor`` of a family the reference holds at or above it (``[]`` = eligible)."""
    out = []
    for d, ref in sorted(reference.items()):
        v = per_family.get(d, float("nan"))
        if not v >= ref - max_drop:
            out.append(f"{d} {v - ref:+.3f}")
        elif v < floor <= ref:
            out.append(f"{d} {v:.3f} < {floor}")
    return out


def _evaluator(items: list[dict], paths: list[str], bf16: bool, modalities: list):
    """A function ``net -> (mean within-ladder SROCC, {family: mean}, "per-modality text")`` on ``paths`` (preprocessed
    once)."""
    index = {p: i for i, p in enumerate(paths)}
    inputs = _preprocess(paths)

    def evaluate(net: SAQM | SAQMEnsemble) -> tuple[float, dict[str, float], str]:
        scores = _score_saqm(net, inputs, bf16, modalities)
        per_cell, _ = _ladder_srocc(items, index, {"SAQM": scores})
        family: dict[str, list[float]] = defaultdict(list)
        modality: dict[str, list[float]] = defaultdict(list)
        for (d, mo), v in per_cell["SAQM"].items():
            family[d] += v
            modality[mo] += v
        value = float(np.mean([v for vs in per_cell["SAQM"].values() for v in vs]))
        by_mod = ", ".join(f"{mo} {np.mean(v):.3f}" for mo, v in sorted(modality.items()))
        return value, {d: float(np.mean(v)) for d, v in family.items()}, by_mod

    return evaluate


def _judge(
    items: list[dict],
    paths: list[str],
    width: float,
    bf16: bool,
    modalities: list,
    reference: str | None = None,
    max_drop: float = 0.05,
    floor: float = 0.80,
):
    """A function ``net -> (mean within-ladder SROCC, {family: mean}, "per-modality text", [rule breaks])`` on this
    split. With a ``reference`` checkpoint (e.g. the shipped model) the breaks are those of the shipping rule against
    it (:func:`_rule_breaks`), else none."""
    evaluate = _evaluator(items, paths, bf16, modalities)
    ref_family = None
    if reference is not None:
        value, ref_family, by_mod = evaluate(_load_saqm(Path(reference), width))
        print(f"reference {reference}: mean within-ladder SROCC {value:.4f} ({by_mod})")

    def judge(net: SAQM | SAQMEnsemble) -> tuple[float, dict[str, float], str, list[str]]:
        value, per_family, by_mod = evaluate(net)
        breaks = [] if ref_family is None else _rule_breaks(per_family, ref_family, max_drop, floor)
        return value, per_family, by_mod, breaks

    return judge


def _select(pattern: str, out: str, judge, width: float) -> int:
    """Score the split with each checkpoint matching ``pattern``; copy the best (mean within-ladder SROCC) among those
    that pass the rule of ``judge`` (:func:`_judge`) to ``out``; returns 1 and writes nothing when none passes."""
    import glob
    import re

    from monai_iqad.utils.io import atomic_torch_save

    def epoch_of(path: str) -> int:
        found = re.findall(r"\d+", Path(path).stem)
        return int(found[-1]) if found else -1

    files = sorted(glob.glob(pattern), key=epoch_of)
    if not files:
        raise FileNotFoundError(f"--select: no checkpoint matches {pattern!r}.")
    best, best_value = "", -np.inf
    for f in files:
        value, per_family, by_mod, breaks = judge(_load_saqm(Path(f), width))
        worst = min(per_family, key=lambda d: per_family[d])
        verdict = f"; breaks the rule: {', '.join(breaks)}" if breaks else ""
        print(f"{f}: mean within-ladder SROCC {value:.4f} (worst {worst} {per_family[worst]:.3f}; {by_mod}){verdict}")
        if not breaks and value > best_value:
            best, best_value = f, value
    if not best:
        print("no checkpoint passes the rule against the reference; nothing written")
        return 1
    net = _load_saqm(Path(best), width)
    atomic_torch_save(net.state_dict(), out)
    print(f"selected {best} (mean within-ladder SROCC {best_value:.4f}) -> {out}")
    return 0


def _greedy_soup(ingredients: list[str], out: str, judge, width: float) -> int:
    """Greedy model soup (Wortsman et al., ICML 2022, recipe 1) on this split: order the checkpoints by their mean
    within-ladder SROCC, start from the best, and add each next one if the uniform weight average of the soup with it
    scores higher and passes the rule of ``judge`` (:func:`_judge`). Writes the soup's weights to ``out``; returns 1
    and writes nothing when not even the best checkpoint passes the rule.
    """
    from monai_iqad.networks import average_state_dicts
    from monai_iqad.utils.io import atomic_torch_save

    nets = {p: _load_saqm(Path(p), width) for p in ingredients}
    single = {}
    for p, net in nets.items():
        value, _, by_mod, breaks = single[p] = judge(net)
        verdict = f"; breaks the rule: {', '.join(breaks)}" if breaks else ""
        print(f"ingredient {p}: mean within-ladder SROCC {value:.4f} ({by_mod}){verdict}")
    order = sorted(ingredients, key=lambda p: -single[p][0])
    if single[order[0]][3]:
        print("the best ingredient breaks the rule against the reference; nothing written")
        return 1
    soup, best_value, best_state = [order[0]], single[order[0]][0], nets[order[0]].state_dict()
    for p in order[1:]:
        state = average_state_dicts([nets[q].state_dict() for q in (*soup, p)])
        trial = SAQM(in_channels=nets[p].in_channels, width=width)
        trial.load_state_dict(state)
        value, _, by_mod, breaks = judge(trial.eval())
        keep = value > best_value and not breaks
        verdict = "added" if keep else "skipped" + (f" (breaks the rule: {', '.join(breaks)})" if breaks else "")
        print(f"soup of {len(soup) + 1} with {p}: mean within-ladder SROCC {value:.4f} ({by_mod}) -> {verdict}")
        if keep:
            soup.append(p)
            best_value, best_state = value, state
    atomic_torch_save(best_state, out)
    print(f"soup of {len(soup)} ({', '.join(soup)}): mean within-ladder SROCC {best_value:.4f} -> {out}")
    return 0


def _ensemble(members: list[str], out: str, judge, width: float) -> int:
    """A prediction ensemble (:class:`SAQMEnsemble`, the uniform mean of the members' scores) of the checkpoints
    ``members``, fixed in advance (no member is chosen by a score), judged on this split by ``judge``
    (:func:`_judge`). Writes its weights to ``out`` if it passes the rule; returns 1 and writes nothing when not."""
    from monai_iqad.utils.io import atomic_torch_save

    nets = [_load_saqm(Path(p), width) for p in members]
    for p, net in zip(members, nets):
        value, _, by_mod, breaks = judge(net)
        verdict = f"; breaks the rule: {', '.join(breaks)}" if breaks else ""
        print(f"member {p}: mean within-ladder SROCC {value:.4f} ({by_mod}){verdict}")
    ensemble = SAQMEnsemble.from_state_dicts([n.state_dict() for n in nets], width=width).eval()
    value, per_family, by_mod, breaks = judge(ensemble)
    worst = min(per_family, key=lambda d: per_family[d])
    print(
        f"ensemble of {len(nets)}: mean within-ladder SROCC {value:.4f} "
        f"(worst {worst} {per_family[worst]:.3f}; {by_mod})"
    )
    if breaks:
        print(f"the ensemble breaks the rule against the reference: {', '.join(breaks)}; nothing written")
        return 1
    atomic_torch_save(ensemble.state_dict(), out)
    print(f"ensemble of {len(nets)} ({', '.join(members)}) -> {out}")
    return 0


def _router(experts: list[str], routes: list[str], out: str, width: float) -> int:
    """Write a :class:`SAQMRouter` of the checkpoints ``experts`` (expert 0: unknown and unrouted modalities) with the
    routes ``MODALITY=K`` to ``out``; nothing is scored (judge it with ``--select`` / ``--model``). An expert
    ``A.pt+B.pt+...`` is the prediction ensemble (:class:`SAQMEnsemble`) of those SAQM checkpoints."""
    from monai_iqad.utils.io import atomic_torch_save

    table: dict[str, int] = {}
    for r in routes:
        name, sep, k = r.partition("=")
        if not sep or not k.strip().isdigit():
            raise ValueError(f"--route {r!r}: expected MODALITY=K, e.g. CT=1.")
        table[name.strip()] = int(k)
    states = []
    for p in experts:
        nets = [_load_saqm(Path(q), width) for q in p.split("+")]  # A.pt+B.pt: the ensemble of A and B
        if any(isinstance(net, SAQMRouter) for net in nets) or (
            len(nets) > 1 and not all(isinstance(net, SAQM) for net in nets)
        ):
            raise ValueError(
                f"--router {p}: an expert is a SAQM or SAQMEnsemble checkpoint, or SAQM checkpoints joined by '+' "
                f"(their ensemble), got {', '.join(type(net).__name__ for net in nets)}."
            )
        if len(nets) > 1:
            nets = [SAQMEnsemble.from_state_dicts([net.state_dict() for net in nets], width=width)]
        states.append(nets[0].state_dict())
    router = SAQMRouter.from_state_dicts(states, routes=table, width=width)
    atomic_torch_save(router.state_dict(), out)
    routed = ", ".join(f"{m} -> {router.expert_of(m)}" for m in (*SAQM_MODALITIES, None))
    print(f"router of {len(states)} experts ({', '.join(experts)}; {routed}) -> {out}")
    return 0


def _rel(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it is inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(path)


def _speed(net: SAQM | SAQMRouter, bf16: bool, repeats: int = 3) -> float:
    x = torch.rand(1, net.in_channels, 512, 512)  # the image channels and any conditioning planes
    if isinstance(net, SAQMRouter):
        x[:, net.image_channels :] = 0.0  # modality planes: unknown, i.e. the default expert
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return repeats / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(REPO / "bundles/medical_saqm_iqa/corpus"))
    parser.add_argument("--model", default=str(REPO / "bundles/medical_saqm_iqa/models/model.pt"))
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another SAQM checkpoint scored in the same run, reported as method NAME (repeatable)",
    )
    parser.add_argument(
        "--compare-unknown",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="as --compare, for a modality-conditioned checkpoint scored with the modality unknown (zero planes)",
    )
    parser.add_argument(
        "--unknown-modality",
        action="append",
        default=[],
        metavar="MODALITY",
        help="score images of this modality with every modality plane at 0 (unknown), in every modality-conditioned "
        "model of the run (repeatable; e.g. US)",
    )
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--split", default="test")
    parser.add_argument("--bf16", action="store_true", help="score with bf16 autocast")
    parser.add_argument("--metrics", default="all", help="comma-separated classic metrics, 'all' or 'none'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "docs/results_iqa.md"))
    parser.add_argument("--plot", default=str(REPO / "docs/results_iqa.png"))
    parser.add_argument("--json", default=None, help="also write the raw per-image scores here")
    parser.add_argument("--select", default=None, help="checkpoint-selection mode: a glob of SAQM checkpoints")
    parser.add_argument("--select-out", default=None, help="where --select copies the best checkpoint's weights")
    parser.add_argument(
        "--select-reference",
        default=None,
        help="with --select / --soup / --ensemble: only checkpoints (soups, ensembles) that pass the shipping rule "
        "against this one on the split are eligible",
    )
    parser.add_argument(
        "--soup",
        nargs="+",
        default=None,
        help="greedy model-soup mode: SAQM checkpoints of one architecture (fine-tunes of one model), with --soup-out",
    )
    parser.add_argument("--soup-out", default=None, help="where --soup writes the soup's weights")
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=None,
        help="prediction-ensemble mode: SAQM checkpoints of one architecture (e.g. seeds of one recipe), with "
        "--ensemble-out",
    )
    parser.add_argument("--ensemble-out", default=None, help="where --ensemble writes the ensemble's weights")
    parser.add_argument(
        "--router",
        nargs="+",
        default=None,
        help="router-building mode (no scoring): SAQM checkpoints, the experts 0, 1, ... of a SAQMRouter (expert 0 "
        "scores unknown and unrouted modalities; A.pt+B.pt: the prediction ensemble of A and B as one expert), with "
        "--route and --router-out; judge the result with --select, "
        "--model or --compare",
    )
    parser.add_argument(
        "--route", nargs="*", default=[], metavar="MODALITY=K", help="with --router: modality MODALITY to expert K"
    )
    parser.add_argument("--router-out", default=None, help="where --router writes the router's weights")
    parser.add_argument("--select-max-drop", type=float, default=0.05, help="rule: largest loss of a family")
    parser.add_argument("--select-floor", type=float, default=0.80, help="rule: a family may not fall below this")
    parser.add_argument("--no-speed", action="store_true", help="skip the 512x512 scoring-speed measurement")
    parser.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap replicates of the 95 %% intervals")
    parser.add_argument(
        "--cluster",
        choices=("source", "crop"),
        default="source",
        help="bootstrap unit of the intervals: the source image of a ladder (default) or its pristine crop (for a set "
        "cut from one image, e.g. the us_dense preset)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.router:
        if not args.router_out:
            parser.error("--router needs --router-out")
        return _router(args.router, args.route, args.router_out, args.width)

    datalist = Path(args.corpus) / "datalist.json"
    if not datalist.exists():
        build_pretrain_corpus(args.corpus, seed=0)
    items = load_datalist(datalist, args.split)
    images = unique_items(items)
    paths = [str(it["image"]) for it in images]
    # --unknown-modality: the same encoding as the bundle id unknown_modalities (ModalityChannels(unknown=...))
    encoding = ModalityChannels(SAQM_MODALITIES, unknown=args.unknown_modality)
    image_modalities = [
        it.get("modality") if encoding.plane_of(it.get("modality")) is not None else None for it in images
    ]
    sources_ = list(dict.fromkeys(str(it.get("source")) for it in images))
    index = {p: i for i, p in enumerate(paths)}
    print(f"{len(items)} ladder items, {len(paths)} unique images ({args.split})")
    if args.select and not args.select_out:
        parser.error("--select needs --select-out")
    if args.soup and not args.soup_out:
        parser.error("--soup needs --soup-out")
    if args.ensemble and not args.ensemble_out:
        parser.error("--ensemble needs --ensemble-out")
    if args.select or args.soup or args.ensemble:
        judge = _judge(
            items,
            paths,
            args.width,
            args.bf16,
            image_modalities,
            args.select_reference,
            args.select_max_drop,
            args.select_floor,
        )
        if args.select:
            return _select(args.select, args.select_out, judge, args.width)
        if args.soup:
            return _greedy_soup(args.soup, args.soup_out, judge, args.width)
        return _ensemble(args.ensemble, args.ensemble_out, judge, args.width)

    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    net = _load_saqm(Path(args.model), args.width)
    start = time.perf_counter()
    inputs = _preprocess(paths)
    scores["SAQM"] = _score_saqm(net, inputs, args.bf16, image_modalities)
    seconds["SAQM"] = (time.perf_counter() - start) / len(paths)
    compared = []
    specs = [(spec, True) for spec in args.compare] + [(spec, False) for spec in args.compare_unknown]
    for spec, known in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--compare expects NAME=PATH, got {spec!r}")
        start = time.perf_counter()
        planes = image_modalities if known else None
        scores[name] = _score_saqm(_load_saqm(Path(path), args.width), inputs, args.bf16, planes)
        seconds[name] = (time.perf_counter() - start) / len(paths)
        compared.append(f"`{name}` = `{_rel(path)}`" + ("" if known else " (modality unknown)"))
    classic = _classic_metrics()
    wanted = list(classic) if args.metrics == "all" else [] if args.metrics == "none" else args.metrics.split(",")
    for name in wanted:
        scores[name], seconds[name] = _score_classic(classic[name], paths)
        print(f"{name}: {seconds[name] * 1000:.1f} ms/image")

    ladder_names, meta, ladder_values = _ladder_values(items, index, scores)
    per_cell = _by_cell(ladder_names, meta, ladder_values)
    if args.cluster == "crop":
        cluster_of = {it["ladder"]: str(it.get("crop", it["ladder"].split("/")[0])) for it in items}
    else:
        cluster_of = {it["ladder"]: str(it.get("source", it["ladder"].split("/")[0])) for it in items}

    methods = list(scores)
    saqm_models = ["SAQM", *(spec.partition("=")[0] for spec, _ in specs)]
    distortions = sorted({d for d, _ in meta.values()})
    modalities = sorted({mo for _, mo in meta.values()})

    def mean_of(m: str, dist: str | None = None, mod: str | None = None) -> float:
        vals = [v for (d, mo), vs in per_cell[m].items() if dist in (None, d) and mod in (None, mo) for v in vs]
        return float(np.mean(vals)) if vals else float("nan")

    mos = np.asarray([float(it["mos"]) for it in images])
    lines = [
        "# Distortion-ladder results: shipped SAQM vs classic NR-IQA",
        "",
        "Generated by `python benchmarks/iqa_ladder.py` on the held-out (`" + args.split + "`) sources of the "
        f"corpus `{_rel(args.corpus)}` (`python -m monai_iqad.data pretrain-corpus`, datalist sha256 "
        f"{hashlib.sha256(datalist.read_bytes()).hexdigest()[:12]}; sources: {', '.join(sources_)}): "
        f"{len(meta)} ladders, {len(paths)} unique images ({', '.join(modalities)}). Scores are oriented so that "
        "higher = better (lower-better metrics negated). Within-ladder SROCC = Spearman correlation of the score with "
        "the severity order of one pristine crop under one distortion (levels 0-5), averaged over ladders; a "
        "constant score on a ladder counts as 0. The pseudo-MOS is SSIM against the pristine (full reference). "
        f"SAQM: `{_rel(args.model)}`"
        + (
            f" (compared in the same run: {', '.join(compared)}; ms / image without the preprocessing)"
            if compared
            else ""
        )
        + f", width {args.width}, {'bf16' if args.bf16 else 'fp32'} scoring; torch threads: {args.threads}"
        + (
            f"; modality-conditioned models see {', '.join(args.unknown_modality)} images as unknown "
            "(`--unknown-modality`)."
            if args.unknown_modality
            else "."
        ),
        "",
        "## Summary",
        "",
        "| method | mean within-ladder SROCC | worst family (SROCC) | SROCC vs pseudo-MOS | PLCC vs pseudo-MOS "
        "| ms / image |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        fam = {d: mean_of(m, d) for d in distortions}
        worst = min(fam, key=lambda d: fam[d])
        s = scores[m]
        ok = np.isfinite(s)
        plcc = float(stats.pearsonr(s[ok], mos[ok])[0]) if ok.sum() > 2 and np.ptp(s[ok]) > 0 else float("nan")
        lines.append(
            f"| {m} | {mean_of(m):.3f} | {worst} ({fam[worst]:.3f}) | {_srocc(s[ok], mos[ok]):.3f} | {plcc:.3f} "
            f"| {seconds[m] * 1000:.1f} |"
        )
    lines.append("")
    for m in saqm_models:
        sa = scores[m]
        lines.append(
            f"{m} score spread on this split: min {sa.min():.3f}, 5th percentile {np.percentile(sa, 5):.3f}, median "
            f"{np.median(sa):.3f}, 95th percentile {np.percentile(sa, 95):.3f}, max {sa.max():.3f}."
        )
    lines += [
        "",
        "## Within-ladder SROCC per distortion (all modalities)",
        "",
        "| distortion | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for d in distortions:
        lines.append(f"| {d} | " + " | ".join(f"{mean_of(m, d):.3f}" for m in methods) + " |")
    lines += ["", "## Within-ladder SROCC per distortion x modality", ""]
    lines += [
        "| distortion | modality | ladders | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---|" * len(methods),
    ]
    for d in distortions:
        for mo in modalities:
            n = len(per_cell[methods[0]].get((d, mo), []))
            if n:
                lines.append(f"| {d} | {mo} | {n} | " + " | ".join(f"{mean_of(m, d, mo):.3f}" for m in methods) + " |")
    lines += ["", "## Per modality (mean within-ladder SROCC)", ""]
    lines += ["| modality | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for mo in modalities:
        lines.append(f"| {mo} | " + " | ".join(f"{mean_of(m, mod=mo):.3f}" for m in methods) + " |")
    lines.append("")
    lines += _intervals(
        ladder_names, meta, ladder_values, cluster_of, saqm_models, wanted, args.bootstrap, unit=args.cluster
    )
    if len(saqm_models) > 1:
        reference = {d: mean_of("SAQM", d) for d in distortions}
        lines += [
            "## Shipping rule against `SAQM`",
            "",
            f"Each compared model against the model given by `--model`, per distortion over all modalities: it breaks "
            f"the rule where a family loses more than {args.select_max_drop} (`--select-max-drop`) or falls below "
            f"{args.select_floor} (`--select-floor`) where `SAQM` holds it (the rule of `--select-reference`).",
            "",
            "| SAQM model | rule | families that break it |",
            "|---|---|---|",
        ]
        for m in saqm_models[1:]:
            fam = {d: mean_of(m, d) for d in distortions}
            breaks = _rule_breaks(fam, reference, args.select_max_drop, args.select_floor)
            lines.append(f"| {m} | {'breaks' if breaks else 'passes'} | {', '.join(breaks) or '-'} |")
        lines.append("")
    lines += _exposure_split(items, ladder_names, meta, ladder_values)
    lines += _severity_split(items, index, scores)
    lines += _source_breakdown(items, index, scores, ladder_names, ladder_values, saqm_models, args.select_floor)

    lines += ["## SAQM scoring speed", ""]
    if args.no_speed:
        lines += ["Not measured in this run (`--no-speed`).", ""]
    else:
        load = os.getloadavg()[0]
        routed = isinstance(net, SAQMRouter)
        for threads in sorted({args.threads, 2}):
            torch.set_num_threads(threads)
            fp32, bf16 = _speed(net, False), _speed(net, True)
            lines.append(
                f"- One 512x512 image (256 patches), width {args.width}, {threads} torch thread(s), this machine: "
                f"**{fp32:.2f} images/s fp32**, **{bf16:.2f} images/s bf16 autocast** (ratio {bf16 / fp32:.2f})"
                + (" (modality router: one expert per image, timed with the modality unknown)." if routed else ".")
            )
        torch.set_num_threads(args.threads)
        lines += [
            "",
            f"1-min load average {load:.2f} before, {os.getloadavg()[0]:.2f} after the speed runs (a shared machine: "
            "compare the ratios, not the absolute rates). "
            + {
                True: "This CPU computes bf16 natively (AVX512-BF16 or AMX-BF16).",
                False: "This CPU emulates bf16 (no AVX512-BF16 or AMX-BF16): bf16 autocast is slower than fp32 here.",
                None: "Whether this CPU computes bf16 natively is unknown.",
            }[native_cpu_bf16()],
            "",
        ]
    lines += [
        f"Plot: `{Path(args.plot).name}` (mean score per level, min-max normalised per method over the split).",
        "",
    ]
    # the generated part only: hand-written analysis after the section's end marker is kept
    write_section(args.out, "iqa_ladder", "\n".join(lines[2:]), intro=lines[0])
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = math.ceil(len(distortions) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    colours = plt.get_cmap("tab20").colors  # more methods than the default 10-colour cycle
    for ax, d in zip(axes.flat, distortions):
        for k_m, m in enumerate(methods):
            s = scores[m]
            lo, hi = np.nanmin(s), np.nanmax(s)
            norm = (s - lo) / (hi - lo) if hi > lo else s * 0
            by_level = defaultdict(list)
            for it in items:
                if it["distortion"] == d:
                    by_level[int(it["level"])].append(norm[index[str(it["image"])]])
            lv = sorted(by_level)
            ax.plot(
                lv,
                [np.nanmean(by_level[k]) for k in lv],
                marker="o",
                label=m,
                color=colours[(2 * k_m) % 20 + (k_m // 10) % 2],
                ls="-" if m in saqm_models else "--",
                lw=2.5 if m == "SAQM" else 1,
            )
        ax.set_title(d)
        ax.set_xlabel("level")
        ax.set_ylim(-0.05, 1.05)
    for ax in list(axes.flat)[len(distortions) :]:
        ax.axis("off")
    axes.flat[0].set_ylabel("normalised score (higher = better)")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=80)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "paths": [os.path.relpath(p, args.corpus) for p in paths],
                    **{m: s.tolist() for m, s in scores.items()},
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
