"""The server's limits (serve/limits.py, serve/server.py): what one client can cost, what a
browser is told, who may reach it. A stand-in classifier replaces the model: the limits do
not depend on it, and the module needs no training.
"""

from __future__ import annotations

import io
import json
import re
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image
from starlette.exceptions import HTTPException

from mnist_digits import cli
from mnist_digits.predict import usable_cpus
from mnist_digits.serve import MAX_BATCH, MAX_BODY_BYTES, create_app, running, server
from mnist_digits.serve.app import REQUEST_PIXELS
from mnist_digits.serve.limits import CpuQueue, RequestLimits

STATIC = Path(cli.__file__).parent / "serve" / "static"


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def drawing() -> bytes:
    pixels = np.full((140, 140), 255, np.uint8)
    pixels[30:110, 62:78] = 0
    return png(Image.fromarray(pixels))


def gif_bomb() -> bytes:
    """43 bytes: a 1x1 GIF whose header claims a 7071x7071 canvas."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 7071, 7071)
    return bytes(data)


@pytest.fixture(scope="module")
def app(uniform_predictor):
    return create_app(uniform_predictor)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def server_url(app):
    with running(app) as url:
        yield url


# --- bodies: 413 that clients receive, slow bodies timed out --------------------------


def test_a_413_reaches_urllib_and_requests_while_they_are_still_sending(server_url):
    """Answered before the body was read, the 413 was lost: Python clients saw
    "connection reset". The server now reads and drops the rest first."""
    too_big = b"\x89PNG" + bytes(MAX_BODY_BYTES + 1024 * 1024)
    ask = urllib.request.Request(server_url + "/api/predict", data=too_big, headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(ask, timeout=30)
    assert refused.value.code == 413 and "4 MiB" in json.loads(refused.value.read())["error"]
    answer = requests.post(server_url + "/api/predict", data=too_big, headers={"Content-Type": "image/png"},
                           timeout=30)
    assert answer.status_code == 413 and "4 MiB" in answer.json()["error"]
    streamed = requests.post(server_url + "/api/predict", data=iter([too_big[:1 << 20]] * 6),
                             headers={"Content-Type": "image/png"}, timeout=30)  # chunked: no length
    assert streamed.status_code == 413 and "4 MiB" in streamed.json()["error"]


def test_a_body_that_trickles_in_is_408(app):
    with running(RequestLimits(app, seconds=1)) as url, socket.create_connection(url[7:].split(":")) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 1000\r\n\r\n\x89PNG")
        sock.settimeout(10)
        answer = b"".join(iter(lambda: sock.recv(4096), b"")).decode("latin-1")  # until it closes
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within 1 s" in answer


def test_half_sent_headers_are_timed_out_and_cannot_starve_health(app, monkeypatch):
    """Connections that never finish their headers used to stay open for ever; past the
    connection limit, nobody else -- /api/health included -- got an answer."""
    monkeypatch.setattr(server, "HEADER_SECONDS", 1)
    monkeypatch.setattr(server, "MAX_CONNECTIONS", 20)
    with running(app) as url:
        host, port = url[7:].split(":")
        half_sent = []
        for _ in range(30):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: local")  # and nothing more
            half_sent.append(sock)
        deadline = time.monotonic() + 10
        while True:
            status = httpx.get(url + "/api/health", timeout=5).status_code
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200
        for sock in half_sent:
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the server
            sock.close()


def test_oversized_headers_are_refused_and_the_connection_closed(server_url):
    """httptools sets no limit of its own: without one, a client could make the server
    hold megabytes of header per connection."""
    host, port = server_url[7:].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n")
            for _ in range(64):  # 1 MiB of headers, 16 KiB at a time, then the end of them
                sock.sendall(b"X-Padding: " + b"a" * (16 * 1024) + b"\r\n")
            sock.sendall(b"\r\n")
            answer = b"".join(iter(lambda: sock.recv(4096), b""))  # until it closes
        except ConnectionError:  # closed by the server while we were still sending
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:100]
    ordinary = httpx.get(server_url + "/api/health", headers={"X-Padding": "a" * 8000}, timeout=5)
    assert ordinary.status_code == 200


# --- CPU: a bounded queue, no work for clients that left, a pixel budget per request ----


class FakeRequest:
    def __init__(self, gone: bool = False):
        self.gone = gone

    async def is_disconnected(self) -> bool:
        return self.gone


def test_the_queue_answers_503_with_retry_after_when_full():
    release = threading.Event()

    async def main():
        queue = CpuQueue(workers=1, waiting=1)
        async with anyio.create_task_group() as tasks:
            for _ in range(2):  # one running, one waiting
                tasks.start_soon(queue.run, FakeRequest(), release.wait)
            await anyio.sleep(0.2)
            with pytest.raises(HTTPException) as refused:
                await queue.run(FakeRequest(), time.sleep, 0)
            release.set()
        await queue.run(FakeRequest(), time.sleep, 0)  # room again once they are done
        return refused.value

    refused = anyio.run(main)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"


def test_work_is_skipped_for_a_client_that_disconnected():
    done = []

    async def main():
        with pytest.raises(HTTPException) as skipped:
            await CpuQueue(workers=1).run(FakeRequest(gone=True), done.append, "work")
        return skipped.value

    assert anyio.run(main).status_code == 499 and done == []


def test_a_batch_learns_that_its_client_left_while_it_runs():
    """An abandoned batch stops at its next image instead of running to the end (a normal
    request waited 25 s behind two abandoned batches)."""
    request = FakeRequest()

    async def leave_soon():
        await anyio.sleep(0.2)
        request.gone = True

    async def main():
        stop = threading.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(leave_soon)
            return await CpuQueue(workers=1).run(request, stop.wait, 10, stop=stop)

    assert anyio.run(main) is True  # stop.wait returned because stop was set, not after 10 s


def test_worker_count_follows_the_cpu_affinity(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    assert usable_cpus() == 1


def test_a_batch_of_tiny_bombs_is_refused_without_decoding_any(client, monkeypatch):
    files = [("files", (f"{i}.gif", gif_bomb(), "image/gif")) for i in range(MAX_BATCH)]
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded a bomb"))
    results = client.post("/api/predict/batch", files=files).json()["results"]
    assert len(results) == MAX_BATCH and all("over the limit" in result["error"] for result in results)


def test_a_batch_decodes_at_most_the_request_pixel_budget(client):
    megapixel = png(Image.new("L", (1000, 1000), 255))
    files = [("files", (f"{i}.png", megapixel, "image/png")) for i in range(MAX_BATCH)]
    results = client.post("/api/predict/batch", files=files).json()["results"]
    over_budget = ["budget" in result["error"] for result in results]
    assert over_budget == [False] * (REQUEST_PIXELS // 10**6) + [True] * (MAX_BATCH - REQUEST_PIXELS // 10**6)


# --- browsers: headers, hosts, no CORS ----------------------------------------------------


def test_every_answer_carries_the_security_headers(client):
    for answer in (client.get("/"), client.get("/static/app.js"), client.get("/api/health"),
                   client.post("/api/predict", content=b"x", headers={"Content-Type": "text/plain"})):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert "'unsafe-inline'" not in client.get("/").headers["content-security-policy"]


def test_the_page_needs_nothing_its_policy_forbids(client):
    """The policy allows the page's own files and data: images; inline scripts and styles
    would be blocked (the browser test runs the page under the policy)."""
    page = client.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "an inline script"
    assert "<style" not in page and not re.search(r"\sstyle=", page), "an inline style"
    assert not re.search(r"\son[a-z]+=", page), "an inline event handler"
    script = (STATIC / "app.js").read_text()
    assert "style=" not in script
    assert not re.search(r"\beval\(|new Function|set(?:Timeout|Interval)\(\s*['\"`]", script), "a string run as code"


@pytest.mark.parametrize("host, status", [("localhost", 200), ("127.0.0.1:8000", 200), ("[::1]:8000", 200),
                                          ("attacker.example", 400), ("localhost.attacker.example", 400)])
def test_only_loopback_host_names_are_answered_by_default(client, host, status):
    """A DNS-rebinding page reaches the server under its own name: refused."""
    assert client.get("/api/health", headers={"Host": host}).status_code == status


def test_allow_host_adds_names(uniform_predictor):
    app = create_app(uniform_predictor, allowed_hosts=server.allowed_hosts("0.0.0.0", ("digits.example",)))
    with TestClient(app, base_url="http://digits.example") as named:
        assert named.get("/api/health").status_code == 200
        assert named.get("/api/health", headers={"Host": "other.example"}).status_code == 400
    args = cli.build_parser().parse_args(["serve", "run", "--allow-host", "a.example", "--allow-host", "b.example"])
    assert args.allow_host == ["a.example", "b.example"]


def test_no_cors_by_default(client):
    asked = client.get("/api/health", headers={"Origin": "http://attacker.example"})
    preflight = client.options("/api/predict", headers={"Origin": "http://attacker.example",
                                                        "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in asked.headers
    assert "access-control-allow-origin" not in preflight.headers
