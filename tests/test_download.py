"""The download path, against HTTP servers on 127.0.0.1: a good mirror, a damaged one,
and a dead first mirror. Nothing here reaches beyond this machine."""

import functools
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from mnist_digits import data
from mnist_digits.errors import DataError

REAL = Path(os.environ.get("MNIST_DIGITS_DATA", data.cache_dir()))


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class CountingHandler(QuietHandler):
    """Counts the files it served, in `served` (set per server)."""

    served: list

    def do_GET(self):
        self.served.append(self.path)
        super().do_GET()


@pytest.fixture
def serve_folder():
    servers = []

    def start(folder: Path, served: list | None = None) -> str:
        """The URL of a server of `folder`; each path it serves is appended to `served`."""
        if served is None:
            handler = functools.partial(QuietHandler, directory=str(folder))
        else:
            handler = functools.partial(type("Handler", (CountingHandler,), {"served": served}),
                                        directory=str(folder))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_DIGITS_DATA", raising=False)
    monkeypatch.delenv("MNIST_DIGITS_MIRROR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras" / "datasets" / "mnist"


def dead_mirror() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_good_mirror_fills_the_cache(serve_folder, empty_cache, mnist, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", ())
    loaded = data.load_mnist(mirror=serve_folder(REAL))
    assert sorted(p.name for p in empty_cache.iterdir()) == sorted(f[0] for f in data.FILES.values())
    np.testing.assert_array_equal(loaded.x_test, mnist.x_test)


def test_damaged_download_is_refused_and_not_cached(serve_folder, empty_cache, tmp_path, monkeypatch):
    bad = tmp_path / "bad-mirror"
    shutil.copytree(REAL, bad)
    raw = (bad / "train-labels-idx1-ubyte.gz").read_bytes()
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(raw[:-100])  # cut short in transit
    monkeypatch.setattr(data, "MIRRORS", ())
    with pytest.raises(DataError) as error:
        data.load_mnist(mirror=serve_folder(bad))
    assert "train-labels-idx1-ubyte.gz" in str(error.value) and "checksum" in str(error.value)
    cached = [p.name for p in empty_cache.iterdir()]
    assert "train-labels-idx1-ubyte.gz" not in cached
    assert not [name for name in cached if name.startswith(".")], "a partial download stayed behind"


def test_dead_first_mirror_falls_back_to_the_next(serve_folder, empty_cache, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", (dead_mirror(), serve_folder(REAL)))
    loaded = data.load_mnist()
    assert len(loaded.x_train) == 55_000
    assert len(list(empty_cache.glob("*.gz"))) == 4


def test_a_damaged_cache_file_is_fetched_again(serve_folder, empty_cache, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", (serve_folder(REAL),))
    data.load_mnist()
    cached = empty_cache / "t10k-labels-idx1-ubyte.gz"
    cached.write_bytes(cached.read_bytes()[:100])
    loaded = data.load_mnist()
    assert len(loaded.y_test) == 10_000
    assert data.sha256_of(cached) == data.FILES["test_labels"][1]


def test_mirror_named_in_the_environment_is_asked_first(serve_folder, empty_cache, monkeypatch):
    mine, default = [], []
    monkeypatch.setattr(data, "MIRRORS", (serve_folder(REAL, default),))
    monkeypatch.setenv("MNIST_DIGITS_MIRROR", serve_folder(REAL, mine))
    data.load_mnist()
    assert len(mine) == 4 and default == []
    # --mirror (the argument) comes before the environment's; no mirror is listed twice.
    monkeypatch.setattr(data, "MIRRORS", ("http://default/", "http://mine/"))
    monkeypatch.setenv("MNIST_DIGITS_MIRROR", "http://mine/")
    assert data.mirror_list() == ["http://mine/", "http://default/"]
    assert data.mirror_list("http://argument/") == ["http://argument/", "http://default/", "http://mine/"]


def test_command_with_only_dead_mirrors_says_what_to_do(empty_cache, tmp_path):
    # Every default mirror is unreachable here too; the command must still end in one line.
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "MNIST_DIGITS_MIRROR": dead_mirror()}
    env.pop("MNIST_DIGITS_DATA", None)
    code = ("import sys; from mnist_digits import data, cli; data.MIRRORS = (); "
            "sys.exit(cli.main(['data']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "could not download" in result.stderr and "--data-dir" in result.stderr


@pytest.fixture
def stalled_mirror():
    """A mirror that accepts connections and then never answers (nothing calls accept:
    the kernel completes the handshake, and the request waits forever)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"


def test_a_stalled_mirror_is_given_up_for_the_next(serve_folder, empty_cache, stalled_mirror, monkeypatch):
    import time

    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 0.5)
    monkeypatch.setattr(data, "MIRRORS", (stalled_mirror, serve_folder(REAL)))
    started = time.monotonic()
    loaded = data.load_mnist()
    assert len(loaded.x_test) == 10_000
    assert time.monotonic() - started < 30  # four files, each half a second at the stalled one


def test_a_mirror_sending_too_much_is_cut_off(serve_folder, empty_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_DOWNLOAD_BYTES", 2**20)  # the training images are 9.9 MB
    monkeypatch.setattr(data, "MIRRORS", ())
    with pytest.raises(DataError) as error:
        data.load_mnist(mirror=serve_folder(REAL))
    assert "train-images-idx3-ubyte.gz" in str(error.value) and "limit" in str(error.value)
    assert not list(empty_cache.iterdir())


def test_sigterm_during_a_download_leaves_no_staging_folder(stalled_mirror, tmp_path):
    import signal
    import time

    cache = tmp_path / "keras" / "datasets" / "mnist"
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "MNIST_DIGITS_MIRROR": stalled_mirror}
    env.pop("MNIST_DIGITS_DATA", None)
    code = "import sys; from mnist_digits import data, cli; data.MIRRORS = (); sys.exit(cli.main(['data']))"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(cache.glob(".download-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(cache.glob(".download-*")), "the download never started"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        process.kill()
    assert "Traceback" not in process.stderr.read()
    assert not list(cache.iterdir())
