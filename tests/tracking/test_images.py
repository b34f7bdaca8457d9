"""tracking/images.py: PNG bytes read back by an independent decoder (Pillow), grid layout, report section."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from fedsilo.tracking.images import PAD, png_bytes, sample_grids, samples_section, tile_grid
from fedsilo.tracking.rows import MetricRow

Image = pytest.importorskip("PIL.Image")


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "L"
        return np.asarray(image)


def test_png_round_trips_through_pillow_pixel_for_pixel() -> None:
    gray = np.arange(7 * 5, dtype=np.uint8).reshape(7, 5) * 7  # 7 rows, 5 columns, distinct values
    assert np.array_equal(decode(png_bytes(gray)), gray)
    noise = np.random.default_rng(0).integers(0, 256, size=(31, 17), dtype=np.uint8)
    assert np.array_equal(decode(png_bytes(noise)), noise)


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 2), np.float32), np.zeros((2, 2, 3), np.uint8), np.zeros((0, 4), np.uint8)]
)
def test_png_refuses_what_is_not_a_grey_image(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        png_bytes(bad)


def test_grid_puts_one_row_per_label_with_white_padding_and_clips() -> None:
    a = np.array([[[0.0, 1.0], [0.5, 2.0]]])  # one 2x2 image: 2.0 is clipped to 1
    b = np.array([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.2], [0.4, 0.6]]])  # two images
    grid = tile_grid({"a": a, "b": b}, pad=1)
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 3) and grid.dtype == np.uint8
    expected = np.full((7, 7), 255, np.uint8)
    expected[1:3, 1:3] = [[0, 255], [128, 255]]  # rint(0.5 * 255) = 128
    expected[4:6, 1:3] = [[255, 0], [0, 255]]
    expected[4:6, 4:6] = [[0, 51], [102, 153]]
    assert np.array_equal(grid, expected)  # row a's second tile stays white
    assert tile_grid({"a": a}).shape == (PAD + 2 + PAD, PAD + 2 + PAD)


def test_grid_refuses_mixed_or_empty_rows() -> None:
    with pytest.raises(ValueError, match="same height"):
        tile_grid({"a": np.zeros((1, 2, 2)), "b": np.zeros((1, 3, 2))})
    with pytest.raises(ValueError, match="at least one row"):
        tile_grid({})


def test_report_section_shows_the_latest_federated_grids_then_the_baselines() -> None:
    rows = [
        MetricRow(r, "server", "evaluate", None, {"samples": f"samples/round_{r:04d}.png", "sample_rows": "x, y"})
        for r in range(5)
    ] + [MetricRow(4, "silo", "evaluate", "a", {"samples": "ignored.png"})]
    summary = {"baselines": {"centralized": {"samples": "samples/baseline_centralized.png"}, "local_only": {
        "a": {"samples": "samples/baseline_a.png"}, "b": {"failure": "boom"}}}}  # fmt: skip
    grids = sample_grids(rows, summary)
    assert [path for _, path, _ in grids] == [
        "samples/round_0002.png", "samples/round_0003.png", "samples/round_0004.png",
        "samples/baseline_centralized.png", "samples/baseline_a.png",
    ]  # fmt: skip
    assert grids[0][0] == "federated, round 2" and grids[0][2] == "x, y"
    png = png_bytes(np.zeros((4, 9), np.uint8))
    html = samples_section(grids, {"samples/round_0004.png": png, "samples/baseline_a.png": png})
    assert html.count("<img") == 2  # grids whose file is missing are left out
    assert "data:image/png;base64," + base64.b64encode(png).decode() in html
    assert "--w:27px" in html  # 3x the PNG's width of 9
    assert "a alone" in html and "rows: x, y" in html
    assert samples_section(grids, {}) == ""
