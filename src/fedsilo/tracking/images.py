"""Sample grids as PNG files, written with the standard library (zlib + struct), no imaging package.

A generative task's report shows what its generator draws. A PNG is the one image format every
browser and viewer opens; an 8-bit greyscale PNG is a few lines of ``zlib`` and ``struct``, so the
core package needs no Pillow for it (Pillow is used only in the tests, to read the files back).
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np

from fedsilo.tracking.rows import MetricRow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PAD = 2  # pixels of white between tiles
LATEST_GRIDS = 3  # the report shows the federated model's last few grids; older ones stay in samples/


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(gray: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of ``gray`` (2-D uint8, rows top to bottom)."""
    if gray.ndim != 2 or gray.dtype != np.uint8 or gray.size == 0:
        raise ValueError(f"png_bytes needs a non-empty 2-D uint8 array, got {gray.dtype} {gray.shape}")
    height, width = gray.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit depth, greyscale, no interlace
    rows = np.hstack([np.zeros((height, 1), np.uint8), gray])  # filter type 0 (none) before each row
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(np.ascontiguousarray(rows).tobytes(), 9))
        + _chunk(b"IEND", b"")
    )


def tile_grid(rows: Mapping[str, np.ndarray], pad: int = PAD) -> np.ndarray:
    """One row of tiles per label (images ``(n, H, W)`` in [0, 1]), white padding, as uint8.

    Rows with fewer images than the longest are left white at the end; values outside [0, 1]
    are clipped (a generator's output is not guaranteed to stay in range).
    """
    stacks = [np.asarray(v, dtype=np.float64) for v in rows.values()]
    if not stacks or any(s.ndim != 3 or len(s) == 0 for s in stacks):
        raise ValueError("tile_grid needs at least one row of images shaped (n, H, W)")
    h, w = stacks[0].shape[1:]
    if any(s.shape[1:] != (h, w) for s in stacks):
        raise ValueError("every image in a grid must have the same height and width")
    cols = max(len(s) for s in stacks)
    grid = np.full((pad + len(stacks) * (h + pad), pad + cols * (w + pad)), 255, np.uint8)
    for r, stack in enumerate(stacks):
        for c, image in enumerate(stack):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return grid


def sample_grids(rows: Sequence[MetricRow], summary: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(caption, path in the run folder, row labels)`` of the grids the report shows, in order.

    The federated model's latest ``LATEST_GRIDS`` grids, then each baseline's grid.
    """
    grids = [
        (f"federated, round {r.round}", str(r.get("samples")), str(r.get("sample_rows", "")))
        for r in rows
        if r.scope == "server" and isinstance(r.get("samples"), str)
    ][-LATEST_GRIDS:]
    base = summary.get("baselines")
    if isinstance(base, Mapping):
        named = [("centralized (pooled)", base.get("centralized"))]
        named += [(f"{name} alone", row) for name, row in (base.get("local_only") or {}).items()]
        grids += [
            (caption, str(row["samples"]), str(row.get("sample_rows", "")))
            for caption, row in named
            if isinstance(row, Mapping) and isinstance(row.get("samples"), str)
        ]
    return grids


def samples_section(grids: Sequence[tuple[str, str, str]], images: Mapping[str, bytes]) -> str:
    """The sample grids as inline PNGs (``data:`` URIs keep the page one offline file), shown 3x."""
    figures = []
    for caption, path, labels in grids:
        png = images.get(path)
        if png is None:
            continue
        width = 3 * int.from_bytes(png[16:20], "big")  # the PNG header's width, scaled for the page
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        text = f"{caption}; rows: {labels}" if labels else caption
        figures.append(
            f"<figure><img src='{uri}' alt='{escape(text)}' style='--w:{width}px'>"
            f"<figcaption>{escape(text)} ({escape(path)})</figcaption></figure>"
        )
    if not figures:
        return ""
    intro = "Images drawn by each model from the same seeded noise, one row per label (top to bottom)."
    return f"<h2>Samples</h2><p>{intro}</p><div class='charts'>{''.join(figures)}</div>"
