"""tracking/charts.py: tick values and where points land, worked out by hand."""

from __future__ import annotations

import re

import pytest

from fedsilo.tracking.charts import Series, bar_chart, line_chart, nice_ticks


def test_nice_ticks_cover_the_range_in_round_steps() -> None:
    # span 0.75 / 5 = 0.15 -> the next step of 1, 2 or 5 x 10^k is 0.2
    assert nice_ticks(0.12, 0.87) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 10) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(-3, 7) == [-4, -2, 0, 2, 4, 6, 8]
    # one value: widened by 10% each side, 2.7..3.3, step 0.2
    assert nice_ticks(3, 3) == pytest.approx([2.6, 2.8, 3.0, 3.2, 3.4])
    assert nice_ticks(0, 0) == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0, float("nan"))


def test_line_chart_places_points_linearly() -> None:
    svg = line_chart("t", [Series("s", [0, 1, 2], [0.0, 0.5, 1.0])], "y")
    # plot box: x from 58 + 8 to 520 - 14 - 8 (432 wide); one legend row moves the top to 30 + 16 = 46,
    # the bottom is 280 + 16 - 42 = 254; y ticks 0..1, so y 0.5 lands half way, at 150
    (path,) = re.findall(r'<path class="series"[^>]*>', svg)
    assert 'data-points="3"' in path
    assert 'd="M66.00,254.00 L282.00,150.00 L498.00,46.00"' in path
    assert svg.count("<circle") == 3
    assert svg.startswith("<svg") and svg.endswith("</svg>")


def test_missing_values_leave_gaps_and_labels_are_escaped() -> None:
    svg = line_chart(
        "a <b> & c", [Series("x<y", [1, 2, 3, 4], [1.0, None, float("nan"), 2.0]), Series("empty", [1], [None])], "y"
    )
    paths = re.findall(r'<path class="series" data-label="([^"]*)" data-points="(\d+)"', svg)
    assert paths == [("x&lt;y", "2")]  # the empty series draws no line (its legend entry stays)
    (d,) = re.findall(r' d="([^"]*)"', svg)
    assert d.count("M") == 2 and "L" not in d  # the gap lifts the pen: two dots, no line across
    assert "a &lt;b&gt; &amp; c" in svg and "<b>" not in svg


def test_a_chart_without_values_says_so() -> None:
    assert "no data" in line_chart("t", [Series("s", [1], [None])], "y")
    assert "no data" in bar_chart("t", [("a", float("nan"))], "y")


def test_bar_chart_heights_by_hand() -> None:
    svg = bar_chart("t", [("a", 0.5), ("b", 1.0)], "y")
    # plot from y 30 (value 1) to 238 (value 0): 208 px; two slots of (520 - 58 - 14) / 2 = 224 px,
    # each bar 70% of its slot starting 15% in
    assert '<rect class="bar" data-label="a" x="91.60" y="134.00" width="156.80" height="104.00"' in svg
    assert '<rect class="bar" data-label="b" x="315.60" y="30.00" width="156.80" height="208.00"' in svg
    assert ">0.5</text>" in svg and ">1</text>" in svg
    one_colour = bar_chart("t", [("a", 0.5), ("b", 1.0)], "y", color="#d62728")
    assert one_colour.count('fill="#d62728"') == 2
