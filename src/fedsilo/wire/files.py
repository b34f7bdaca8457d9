"""Writing the files fedsilo keeps: standard JSON only, whole files only, a full disk as one clear error.

Every JSON text fedsilo writes (``metrics.jsonl``, ``summary.json``, ``config.json``,
``split.json``, ``mlflow.json``, a silo's stored values, a checkpoint's metadata) comes from
:func:`dumps`, which refuses NaN and infinity (``allow_nan=False``): a bare ``NaN`` is not JSON and
other parsers reject it. A value that may honestly be non-finite (the server's own loss of a
diverged model) is made ``null`` on purpose with :func:`finite_or_none` before it gets here.

:func:`write_atomic` (and :func:`fedsilo.wire.arrays.save_file`) leave either the old file or the
new one, never half of one: a failed write removes its temporary file. A write that fails for want
of space (``ENOSPC``, a quota, or a file-size limit: ``EFBIG``) raises
:class:`~fedsilo.errors.DiskFull`, naming the file, the disk it is on and its free space.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedsilo.errors import DiskFull

#: The errors that mean "no room for these bytes": a full disk, a full quota, a file-size limit.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values; anything else (a Path) as its text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def dumps(value: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """Standard JSON: a NaN or infinity anywhere in ``value`` is a ValueError, never written."""
    return json.dumps(value, indent=indent, sort_keys=sort_keys, allow_nan=False, default=_plain)


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (numpy's too) made None, in mappings and lists as well."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def mount_of(path: Path) -> Path:
    """The mount point (the disk) ``path`` is on."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full(path: Path, exc: OSError) -> DiskFull:
    mount = mount_of(path)
    try:
        free = f"{shutil.disk_usage(mount).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    code = exc.errno or errno.ENOSPC
    fix = {
        errno.EFBIG: "raise this process's file-size limit (`ulimit -f`)",
        errno.EDQUOT: f"free space within your quota on {mount}",
    }.get(code, f"free space on {mount}")
    return DiskFull(
        f"the disk is full: could not write {path} ({os.strerror(code)}; the disk is {mount}, {free})", fix
    )


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writes to ``path`` inside: no space for them is :class:`DiskFull`; other errors pass."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise disk_full(path, exc) from None
        raise


def write_atomic(path: Path, data: str | bytes) -> Path:
    """``path`` holds ``data`` afterwards, or (on any error) what it held before; no temporary is left."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path):
        try:
            if isinstance(data, str):
                tmp.write_text(data, encoding="utf-8")
            else:
                tmp.write_bytes(data)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def append_whole(file: Any, data: bytes) -> None:
    """Append ``data`` to an unbuffered binary ``file``; a failed write cuts off what it wrote.

    So an append-only log (``metrics.jsonl``) never ends in half a line when the disk fills: it
    ends after its last whole line, and the file object holds no buffer that could fail again.
    """
    start = file.seek(0, os.SEEK_END)
    view = memoryview(data)
    try:
        while view:
            view = view[file.write(view) :]
    except BaseException:
        file.truncate(start)
        raise
