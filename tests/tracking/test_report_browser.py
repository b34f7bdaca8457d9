"""The acceptance test of the report: a real run's report.html, opened in headless Chromium.

Chromium loads the page and a copy of it with a probe script appended (the report itself has
no script) that measures what was laid out: every chart's box, each line's drawn length and each
bar's height. A screenshot of the report is then checked pixel by pixel inside each chart's box,
and kept at ``test-artifacts/report.png`` for a person to look at.

Needs Debian's ``chromium`` (``make test`` installs it when missing and root); without it this
test skips, unless ``FEDSILO_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where it fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
PROBE = """<script>
addEventListener("load", () => {
  const charts = [...document.querySelectorAll("svg.chart")].map((svg) => {
    const box = svg.getBoundingClientRect();
    return {
      title: svg.querySelector("title").textContent,
      x: box.x + scrollX, y: box.y + scrollY, w: box.width, h: box.height,
      lines: [...svg.querySelectorAll("path.series")].map((p) => [+p.dataset.points, p.getTotalLength()]),
      bars: [...svg.querySelectorAll("rect.bar")].map((r) => r.getBBox().height),
      ink: ((el) => {
        const {x, y, width, height} = el.getBoundingClientRect();
        return {x: x + scrollX, y: y + scrollY, w: width, h: height,
                color: el.getAttribute(el.tagName === "path" ? "stroke" : "fill")};
      })(svg.querySelector("path.series, rect.bar")),
    };
  });
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({charts, width: document.documentElement.scrollWidth,
                                    height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "Debian's chromium is not installed (`apt-get install -y chromium`, or run `make test` as root)"
    if os.environ.get("FEDSILO_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FEDSILO_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def browse(browser: str, profile: Path, *args: str) -> str:
    done = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def probe(browser: str, report: Path, tmp_path: Path) -> dict[str, Any]:
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = browse(browser, tmp_path / "profile", "--window-size=1280,1000", "--dump-dom", page.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S)
    assert found, "the probe did not run: " + dom[-500:]
    return json.loads(html.unescape(found.group(1)))


def rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def test_the_report_of_a_real_run_is_drawn_in_chromium(cli, make_experiment, run_folder, tmp_path: Path) -> None:
    browser = chromium()
    image_module = pytest.importorskip("PIL.Image")
    np = pytest.importorskip("numpy")
    path = make_experiment(rounds=2, workers=0)
    result = cli("run", path, "--quiet", "--baselines")
    assert result.exit_code == 0, result.stderr
    report = run_folder(path.parent / "runs") / "report.html"

    layout = probe(browser, report, tmp_path)
    charts = layout["charts"]
    titles = [c["title"] for c in charts]
    for expected in ("global model: loss", "global model: accuracy", "each silo: loss", "training: train loss"):
        assert expected in titles
    assert any(t.startswith("server test set:") for t in titles)  # the baselines' bars
    for chart in charts:
        assert chart["w"] > 200 and chart["h"] > 150, chart["title"]
        assert chart["lines"] or chart["bars"], f"{chart['title']} draws nothing"
        for points, length in chart["lines"]:
            assert points >= 2 and length > 50, f"{chart['title']}: a line of {points} points is {length}px long"
        assert all(h > 0 for h in chart["bars"]), chart["title"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    size = f"--window-size={max(layout['width'], 1280)},{layout['height'] + 40}"
    browse(browser, tmp_path / "profile", size, f"--screenshot={shot}", report.as_uri())
    print(f"\nscreenshot of the report: {shot}")
    with image_module.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert pixels.shape[0] >= layout["height"] - 1, "the screenshot does not hold the whole page"
    for chart in charts:
        x, y, w, h = (int(round(chart[k])) for k in ("x", "y", "w", "h"))
        area = pixels[y + 2 : y + h - 2, x + 2 : x + w - 2]
        inked = (np.abs(area - 255).sum(axis=2) > 60).mean()
        assert inked > 0.01, f"{chart['title']}: only {inked:.2%} of its area is drawn"
        # inside the box of its first line (or bar), below the legend, that line's colour must show
        box = chart["ink"]
        x, y, w, h = int(box["x"]) - 2, int(box["y"]) - 2, int(box["w"]) + 4, int(box["h"]) + 4
        first = np.array(rgb(box["color"]), dtype=np.int16)
        first_color = (np.abs(pixels[y : y + h, x : x + w] - first).sum(axis=2) < 60).sum()
        assert first_color >= 40, f"{chart['title']}: {first_color} pixels in its first line's or bar's colour"
