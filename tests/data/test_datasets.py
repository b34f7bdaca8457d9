"""Dataset registry, search path, checksums and downloads (against a local HTTP server)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fedsilo.data.catalogue import DATASETS, DatasetInfo, dataset_info
from fedsilo.data.datasets import (
    data_dirs,
    download,
    find_dataset,
    load_arrays,
    verify,
)
from fedsilo.errors import ChecksumMismatch, ConfigError, DataError, DatasetNotFound

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "pneumoniamnist.npz").is_file(),
    reason=f"shared data folder {SHARED} (beside the checkout) is absent",
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user env var or home cache leaks into these tests."""
    monkeypatch.delenv("FEDSILO_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def tiny_info(payload: bytes, url: str | None = None) -> DatasetInfo:
    return DatasetInfo(
        name="tiny",
        filename="tiny.npz",
        url=url,
        md5=hashlib.md5(payload).hexdigest(),
        sha256=None,
        licence="CC0",
        citation="generated in a test",
    )


@contextmanager
def serve(files: dict[str, bytes]) -> Iterator[str]:
    """Serve ``files`` (path -> bytes) on 127.0.0.1:<free port>; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- registry and search path ---------------------------------------------------------------


def test_registry_holds_the_official_checksums() -> None:
    assert DATASETS["pneumoniamnist"].md5 == "28209eda62fecd6e6a2d98b1501bb15f"
    assert DATASETS["breastmnist"].md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert "zenodo.org/records/10519652" in str(DATASETS["breastmnist"].url)
    assert DATASETS["mnist"].md5 == "8a61469f7ea1b51cbae51d4f78837e45"
    assert DATASETS["ham10000_metadata"].url is None


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(ConfigError) as err:
        dataset_info("cifar10")
    assert "breastmnist" in err.value.one_line() and "pneumoniamnist" in err.value.one_line()


def test_data_dirs_order_and_dedup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    monkeypatch.setenv("FEDSILO_DATA_DIR", os.pathsep.join([str(b), str(a), ""]))
    dirs = data_dirs([a, c])
    assert dirs[:5] == [
        a,
        c,
        b,
        tmp_path / "data" / "datasets",
        tmp_path / "home" / ".cache" / "fedsilo" / "datasets",
    ]
    assert len(dirs) == len(set(dirs))


@needs_shared
def test_data_dirs_finds_shared_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert SHARED.resolve() in [d.resolve() for d in data_dirs()]


@needs_shared
def test_data_dirs_finds_shared_from_the_source_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # nothing beside the cwd: found by walking up from the module
    assert SHARED.resolve() in [d.resolve() for d in data_dirs()]


@needs_shared
def test_find_real_pneumoniamnist_from_repo_and_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    path = find_dataset("pneumoniamnist")
    assert path.name == "pneumoniamnist.npz"
    verify(path, DATASETS["pneumoniamnist"])


@needs_shared
@pytest.mark.parametrize("name", ["breastmnist", "mnist", "ham10000_metadata"])
def test_shared_variants_are_accepted(name: str) -> None:
    verify(SHARED / DATASETS[name].filename, DATASETS[name])


# --- checksums and offline errors ----------------------------------------------------------


@needs_shared
def test_corrupted_copy_raises_checksum_mismatch(tmp_path: Path) -> None:
    copy = tmp_path / "breastmnist.npz"
    shutil.copyfile(SHARED / "breastmnist.npz", copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch) as err:
        find_dataset("breastmnist", data_dirs=[tmp_path])
    line = err.value.one_line()
    assert str(copy) in line
    assert "750601b1f35ba3300ea97c75c52ff8f6" in line  # expected
    assert hashlib.md5(bytes(data)).hexdigest() in line  # actual
    assert "delete" in line


def test_not_found_offline_says_which_file_goes_where(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    with pytest.raises(DatasetNotFound) as err:
        find_dataset("pneumoniamnist", data_dirs=[empty])
    line = err.value.one_line()
    assert "\n" not in line
    assert "pneumoniamnist.npz" in line and "28209eda62fecd6e6a2d98b1501bb15f" in line
    assert str(empty) in line
    assert "FEDSILO_DATA_DIR" in line and "--download" in line


def test_not_found_without_url_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as err:
        find_dataset("ham10000_metadata", data_dirs=[tmp_path])
    line = err.value.one_line()
    assert "doi.org/10.7910/DVN/DBW86T" in line and "--download" not in line
    with pytest.raises(DataError, match="cannot be downloaded automatically"):
        find_dataset("ham10000_metadata", data_dirs=[tmp_path], download=True)


# --- downloads -------------------------------------------------------------------------------


def test_download_success_lands_verified_file(tmp_path: Path) -> None:
    payload = npz_bytes(x_train=np.arange(12, dtype=np.uint8).reshape(3, 2, 2), y_train=[0, 1, 0])
    with serve({"/tiny.npz": payload}) as base:
        path = download(tiny_info(payload, url=f"{base}/tiny.npz"), tmp_path / "dl")
    assert path == tmp_path / "dl" / "tiny.npz"
    assert path.read_bytes() == payload
    assert leftovers(tmp_path / "dl") == ["tiny.npz"]


def test_download_wrong_bytes_never_lands(tmp_path: Path) -> None:
    payload = npz_bytes(y_train=np.arange(5))
    with serve({"/tiny.npz": b"not the file"}) as base, pytest.raises(ChecksumMismatch):
        download(tiny_info(payload), tmp_path, url=f"{base}/tiny.npz")
    assert leftovers(tmp_path) == []


def test_download_http_error_is_a_data_error(tmp_path: Path) -> None:
    payload = npz_bytes(y_train=np.arange(5))
    with serve({}) as base, pytest.raises(DataError, match="404"):
        download(tiny_info(payload), tmp_path, url=f"{base}/missing.npz")
    assert leftovers(tmp_path) == []


def test_download_unreachable_fails_fast_with_a_fix(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        download(tiny_info(b"x"), tmp_path, url=f"http://127.0.0.1:{port}/tiny.npz", timeout=5)
    assert time.monotonic() - start < 5
    assert "no internet?" in err.value.one_line()
    assert str(tmp_path / "tiny.npz") in err.value.one_line()
    assert not isinstance(err.value, ChecksumMismatch)
    assert leftovers(tmp_path) == []


@needs_shared
def test_find_dataset_downloads_into_first_writable_dir(tmp_path: Path) -> None:
    body = (SHARED / "breastmnist.npz").read_bytes()  # the accepted local variant
    target = tmp_path / "datasets"
    with serve({"/breastmnist.npz": body}) as base:
        path = find_dataset("breastmnist", data_dirs=[target], download=True, url=f"{base}/breastmnist.npz")
    assert path == target / "breastmnist.npz" and path.read_bytes() == body
    assert find_dataset("breastmnist", data_dirs=[target]) == path  # now found offline


# --- load_arrays -----------------------------------------------------------------------------


def test_load_arrays_medmnist_layout_flattens_labels(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    x = np.zeros((4, 2, 2), np.uint8)
    np.savez(path, train_images=x, train_labels=np.array([[0], [1], [1], [0]], np.uint8))
    arrays = load_arrays(path)
    assert list(arrays) == ["train"]
    assert arrays["train"][1].tolist() == [0, 1, 1, 0]
    assert arrays["train"][1].dtype == np.int64 and arrays["train"][0].dtype == np.uint8


def test_load_arrays_keras_layout(tmp_path: Path) -> None:
    path = tmp_path / "k.npz"
    np.savez(path, x_train=np.zeros((3, 2)), y_train=[1, 2, 3], x_test=np.ones((1, 2)), y_test=[4])
    arrays = load_arrays(path)
    assert sorted(arrays) == ["test", "train"]
    assert arrays["test"][1].tolist() == [4]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"images": np.zeros(3), "labels": np.zeros(3)}, "keys found: images, labels"),
        ({"x_train": np.zeros((3, 1)), "y_train": np.zeros(2, int)}, "3 samples but y_train"),
        ({"x_train": np.zeros((2, 1)), "y_train": np.zeros((2, 3), int)}, "multi-label"),
        ({"x_train": np.zeros((2, 1)), "y_train": np.zeros(2)}, "float64 labels"),
    ],
)
def test_load_arrays_bad_layouts(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_arrays(path)


def test_load_arrays_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(b"hello")
    with pytest.raises(DataError, match="cannot read"):
        load_arrays(path)


@needs_shared
@pytest.mark.parametrize(
    ("name", "sizes"),
    [("pneumoniamnist", (4708, 524, 624)), ("breastmnist", (546, 78, 156))],
)
def test_load_arrays_real_medmnist(name: str, sizes: tuple[int, int, int]) -> None:
    arrays = load_arrays(SHARED / f"{name}.npz")
    assert tuple(len(arrays[s][1]) for s in ("train", "val", "test")) == sizes
    assert all(y.ndim == 1 and y.dtype == np.int64 for _, y in arrays.values())
