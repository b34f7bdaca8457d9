"""A full disk under the run folder: one line naming the disk, checkpoints intact, ``--resume`` repairs.

The disk is a small tmpfs where this process may mount one (root), and in every case a file-size
limit (``RLIMIT_FSIZE``, with ``SIGXFSZ`` ignored so that writes fail with ``EFBIG`` instead of
killing the process). It fills once round 3 is done, so round 4 cannot be written.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_runner import assert_same_model, model_of, run_ok, without_time

from fedsilo.server.checkpoint import load_checkpoint
from fedsilo.tracking.console import ConsoleProgress

FULL_AFTER = 3


class TmpfsDisk:
    """A 2 MiB tmpfs; ``fill`` writes a file until the disk has no page left."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT)
        try:
            for size in (1 << 16, 1 << 12, 1):
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


class SizeLimitDisk:
    """No file of this process may grow: as good as a full disk for every file the run appends to."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._saved: tuple[tuple[int, int], object] | None = None

    def fill(self) -> None:
        self._saved = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, self._saved[0][1]))

    def free(self) -> None:
        if self._saved is not None:
            limits, handler = self._saved
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, handler)  # type: ignore[arg-type]
            self._saved = None


def _mount_tmpfs(root: Path) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], capture_output=True)
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "file_size_limit"])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TmpfsDisk | SizeLimitDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "file_size_limit":
        disk = SizeLimitDisk(root)
        yield disk
        disk.free()
        return
    if not _mount_tmpfs(root):
        pytest.skip("mounting a tmpfs needs root (the file-size limit variant runs instead)")
    try:
        yield TmpfsDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def test_a_full_disk_is_one_line_and_resume_ends_with_the_uninterrupted_model(
    cli, make_experiment, run_folder, metrics_of, small_disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = make_experiment(folder="straight", rounds=5)
    run_ok(cli, straight)
    full = run_folder(straight.parent / "runs")

    path = make_experiment(folder="full", rounds=5, extra={"output": str(small_disk.root)})
    shown = ConsoleProgress.on_round_end

    def fill_after(self: ConsoleProgress, round: int, rows: object) -> None:
        shown(self, round, rows)  # type: ignore[arg-type]
        if round == FULL_AFTER:
            small_disk.fill()

    monkeypatch.setattr(ConsoleProgress, "on_round_end", fill_after)
    try:
        result = cli("run", path, "--quiet")
    finally:
        small_disk.free()
    monkeypatch.undo()

    assert result.exit_code == 13, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    line = " ".join(result.stderr.split())
    run = run_folder(small_disk.root)
    assert "disk is full" in line and str(small_disk.root) in line
    assert f"fedsilo run --resume {run}" in line
    # The checkpoints written before the disk filled are whole; no half-written file is left.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        f"round_{r:04d}.safetensors" for r in range(1, FULL_AFTER + 1)
    ]
    assert load_checkpoint(run / "checkpoints" / f"round_{FULL_AFTER:04d}.safetensors").round == FULL_AFTER
    assert not [p for p in run.rglob("*.tmp")]
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n")  # no torn line
    metrics_of(run)  # every line parses

    run_ok(cli, "--resume", run)
    assert_same_model(model_of(run), model_of(full))
    assert without_time(metrics_of(run)) == without_time(metrics_of(full))
