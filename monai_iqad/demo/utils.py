"""Small image helpers shared by the demo builders: per-item random generators, resizing, gray, PNG output."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["item_rng", "resize", "save_png", "to_gray"]


def item_rng(seed: int, *parts: Any) -> np.random.Generator:
    """A Generator that depends only on the seed and a stable name, so items don't depend on build order."""
    key = zlib.crc32("/".join(str(p) for p in parts).encode("utf-8"))
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key])


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize (Pillow Lanczos on float32 planes) of an ``(H, W)`` or ``(H, W, C)`` image to (h, w)."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img.astype(np.float64)

    def plane(p: np.ndarray) -> np.ndarray:
        resized = Image.fromarray(np.ascontiguousarray(p, dtype=np.float32)).resize((w, h), Image.LANCZOS)
        return np.asarray(resized, dtype=np.float64)

    out = plane(img) if img.ndim == 2 else np.stack([plane(img[..., c]) for c in range(img.shape[2])], -1)
    return np.clip(out, 0.0, 1.0)


def save_png(path: Path, img: np.ndarray) -> None:
    """Write an 8-bit PNG (``L`` for 2-D, ``RGB`` for ``(H, W, 3)``); byte-identical for identical input."""
    u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(u8)).save(path, format="PNG")


def to_gray(img: np.ndarray) -> np.ndarray:
    """ITU-R 601 luminance of an RGB image (2-D images are returned as they are)."""
    if img.ndim == 2:
        return img
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
