"""The HTTP API of `mnist-digits serve`: answers, limits, bad input, concurrency, the command.

Most tests call the app in-process (Starlette's TestClient); the limits on streamed bodies,
concurrency and the command itself go through a real uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import io
import re
import signal
import socket
import struct
import sys
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mnist_digits import cli
from mnist_digits.predict import Predictor
from mnist_digits.serve import MAX_BATCH, MAX_BODY_BYTES, create_app, running
from mnist_digits.serve.limits import CpuQueue

STATIC = Path(cli.__file__).parent / "serve" / "static"
LOCAL = "http://localhost"  # the test client's address: a Host the app answers by default


# --- images ---------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def canvas_png(digit: np.ndarray, side: int = 140) -> bytes:
    """An MNIST digit as the drawing page sends one: dark ink on white, 140x140."""
    return png_bytes(np.asarray(Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BILINEAR)))


def blank_png() -> bytes:
    return png_bytes(np.full((140, 140), 255, dtype=np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 100_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels: a decompression bomb's shape."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + png_chunk(b"IEND", b""))


def decode_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(mlp_run):
    return Predictor.from_path(mlp_run)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor), base_url=LOCAL, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def server_url(predictor):
    with running(create_app(predictor)) as url:
        yield url


@pytest.fixture(scope="module")
def digits(mnist):
    """The first 40 test digits and their labels."""
    return mnist.x_test[:40], mnist.y_test[:40]


def assert_json_error(response, status: int | tuple[int, ...]) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in response.text
    return message


# --- answers --------------------------------------------------------------------------


def test_a_drawn_digit_gets_the_digit_confidence_probabilities_and_the_image_the_model_saw(client, digits):
    images, labels = digits
    unsure_below = client.get("/api/model").json()["unsure_below"]
    right = 0
    for image, label in zip(images, labels):
        response = client.post("/api/predict", content=canvas_png(image), headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) == {"digit", "confidence", "probabilities", "unsure", "image"}
        assert len(answer["probabilities"]) == 10 and abs(sum(answer["probabilities"]) - 1) < 1e-4
        assert answer["confidence"] == max(answer["probabilities"])
        assert answer["digit"] == int(np.argmax(answer["probabilities"]))
        assert answer["unsure"] == (answer["confidence"] < unsure_below)
        seen = decode_data_url(answer["image"])
        assert seen.shape == (28, 28) and seen.max() > 200 and seen[0].max() == 0  # white ink on black
        right += answer["digit"] == label
    assert right >= 38, f"only {right} of 40 MNIST test digits read right through the API"


def test_with_one_thread_drawings_are_answered_on_the_event_loop_alike_and_photos_still_queued(
        predictor, client, digits, monkeypatch):
    """One core per process (serve's default): a drawing skips the hand-off to a worker
    thread (cheaper), with the same answer; a large photo still waits its turn in the queue,
    so that it never holds up other requests."""
    queued = []
    run = CpuQueue.run

    async def counting_run(self, request, function, *args, **kwargs):
        queued.append(function.__name__)
        return await run(self, request, function, *args, **kwargs)

    monkeypatch.setattr(CpuQueue, "run", counting_run)
    photo = Image.fromarray(np.kron(255 - digits[0][5], np.ones((40, 40), np.uint8)))  # 1120x1120
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    with TestClient(create_app(predictor, threads=1), base_url=LOCAL) as one_thread:
        for image in digits[0][:5]:
            drawing = {"content": canvas_png(image), "headers": {"Content-Type": "image/png"}}
            assert one_thread.post("/api/predict", **drawing).json() == client.post("/api/predict", **drawing).json()
        assert queued == ["read_digit"] * 5  # only the two-thread app's
        answer = one_thread.post("/api/predict", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
        # Bad small bodies, answered on the loop too: the same one-line errors.
        not_an_image = one_thread.post("/api/predict", content=b"just text", headers={"Content-Type": "image/png"})
        blank = one_thread.post("/api/predict", content=blank_png(), headers={"Content-Type": "image/png"})
    assert answer.status_code == 200 and answer.json()["digit"] == digits[1][5]
    assert queued == ["read_digit"] * 6
    assert_json_error(not_an_image, 400)
    assert "no digit found" in assert_json_error(blank, 422)


def test_an_upload_as_multipart_file_gets_the_same_answer_as_a_raw_body(client, digits):
    image = canvas_png(digits[0][3])
    raw = client.post("/api/predict", content=image, headers={"Content-Type": "image/png"}).json()
    form = client.post("/api/predict", files={"file": ("three.png", image, "image/png")}).json()
    assert form == raw


def test_a_blank_canvas_is_no_digit_found_not_a_guess(client):
    message = assert_json_error(client.post("/api/predict", content=blank_png(),
                                            headers={"Content-Type": "image/png"}), 422)
    assert message.startswith("no digit found")


def test_batch_answers_each_image_in_order_and_says_which_could_not_be_read(client, digits):
    images, labels = digits
    files = [("files", (f"{i}.png", canvas_png(images[i]), "image/png")) for i in range(5)]
    files.insert(2, ("files", ("notes.txt", b"not an image", "text/plain")))
    files.append(("files", ("blank.png", blank_png(), "image/png")))
    response = client.post("/api/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 7
    assert "not an image" in results[2]["error"]
    assert results[6]["error"].startswith("no digit found")
    read = [result["digit"] for i, result in enumerate(results) if i not in (2, 6)]
    assert read == list(labels[:5])
    single = client.post("/api/predict", content=canvas_png(images[0]), headers={"Content-Type": "image/png"}).json()
    assert results[0]["image"] == single["image"]
    np.testing.assert_allclose(results[0]["probabilities"], single["probabilities"], atol=1e-6)


def test_batch_refuses_more_than_its_limit_and_an_empty_form(client):
    image = blank_png()
    too_many = [("files", (f"{i}.png", image, "image/png")) for i in range(MAX_BATCH + 1)]
    assert_json_error(client.post("/api/predict/batch", files=too_many), 400)
    no_files = b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--x--\r\n'
    assert_json_error(client.post("/api/predict/batch", content=no_files,
                                  headers={"Content-Type": "multipart/form-data; boundary=x"}), 400)
    assert_json_error(client.post("/api/predict/batch", data={"note": "a form, not files"}), 415)
    assert_json_error(client.post("/api/predict/batch", content=image, headers={"Content-Type": "image/png"}), 415)


def test_health_and_model_describe_the_served_model(client, mlp_run):
    import json

    assert client.get("/api/health").json()["status"] == "ok"
    model = client.get("/api/model").json()
    metrics = json.loads((mlp_run / "metrics.json").read_text())
    config = json.loads((mlp_run / "config.json").read_text())
    assert model["name"] == "mlp"
    assert model["parameters"] == config["parameters"] == 101_770
    assert model["test_accuracy"] == metrics["test"]["accuracy"]


def test_openapi_docs_describe_both_ways_to_send_an_image(client):
    docs = client.get("/docs").text
    assert "swagger" in docs.lower() and not re.search(r"(src|href)=.https?://", docs)  # no CDN
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/predict/batch", "/api/health", "/api/model"} <= set(spec["paths"])
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= set(body)


def test_the_page_and_every_asset_come_from_the_server_itself(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element_id in ("canvas", "clear", "prediction", "probabilities", "upload"):
        assert f'id="{element_id}"' in page.text
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "/static/app.js" in assets and "/static/style.css" in assets
    for asset in assets:
        assert asset.startswith(("/", "data:")), f"{asset} is not served by the app"
        if asset.startswith("/"):
            assert client.get(asset).status_code == 200, asset
    for path in STATIC.iterdir():  # no CDN, no web font, no analytics: works offline
        assert not re.search(r"https?://", path.read_text()), f"{path.name} loads something from the web"


# --- bad input: a JSON error, never a 500, never a traceback --------------------------


NOISE = png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
TRUNCATED = NOISE[:len(NOISE) // 2]


@pytest.mark.parametrize("content, content_type, status", [
    (b"hello", "text/plain", 415),
    (b"hello", None, 415),
    (b'{"image": 1}', "application/json", 415),
    (b"hello, not an image", "image/png", 400),
    (b"", "image/png", 400),
    (TRUNCATED, "image/png", 400),
    (bomb_png(), "image/png", 400),
], ids=["text", "no-content-type", "json", "garbage-as-png", "empty", "truncated-png", "decompression-bomb"])
def test_bad_bodies_get_a_json_error(client, content, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    message = assert_json_error(client.post("/api/predict", content=content, headers=headers), status)
    if content.startswith(b"\x89PNG") and len(content) < 200:
        assert re.search(r"pixels|truncated|damaged", message), message


@pytest.mark.parametrize("body, content_type", [
    (b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nabc", "multipart/form-data; boundary=x"),
    (b"--x\r\nno headers at all\r\n--x--\r\n", "multipart/form-data; boundary=x"),
    (b"--x\r\nContent-Disposition: form-data; filename=\"a.png\"\r\n\r\nabc\r\n--x--\r\n", "multipart/form-data; boundary=x"),
    (b"anything", "multipart/form-data"),
    (b"\xff\xfe\x00garbage", "multipart/form-data; boundary=zz"),
], ids=["unterminated", "no-part-headers", "no-field-name", "no-boundary", "binary-garbage"])
def test_malformed_multipart_is_400(client, body, content_type):
    assert_json_error(client.post("/api/predict", content=body, headers={"Content-Type": content_type}), 400)


def test_multipart_without_a_file_or_with_a_non_image_is_400(client):
    text_field = b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\ntext, not a file\r\n--x--\r\n'
    assert "'file'" in assert_json_error(client.post("/api/predict", content=text_field, headers={
        "Content-Type": "multipart/form-data; boundary=x"}), 400)
    assert_json_error(client.post("/api/predict", files={"picture": ("a.png", blank_png(), "image/png")}), 400)
    assert_json_error(client.post("/api/predict", files={"file": ("a.pdf", b"%PDF-1.4 ...", "application/pdf")}), 400)


def test_unknown_paths_and_methods_are_json_errors(client):
    assert_json_error(client.get("/api/nothing"), 404)
    wrong_method = client.get("/api/predict")
    assert_json_error(wrong_method, 405)
    assert wrong_method.headers["allow"] == "POST"


def test_a_bug_is_a_500_with_a_one_line_json_error_and_no_traceback(predictor):
    class Broken:
        classifier, temperature, unsure_below = predictor.classifier, 1.0, 0.8

        def predict_image(self, source):
            raise RuntimeError("secret internal detail")

    with TestClient(create_app(Broken()), base_url=LOCAL, raise_server_exceptions=False) as broken:
        response = broken.post("/api/predict", content=canvas_png(np.eye(28, dtype=np.uint8) * 255),
                               headers={"Content-Type": "image/png"})
    assert_json_error(response, 500)
    assert "secret" not in response.text


# --- limits on a real server: nothing over 4 MiB is buffered --------------------------


def test_a_body_over_4_mib_is_413_whether_declared_or_streamed(server_url):
    too_big = b"\x89PNG" + b"\x00" * MAX_BODY_BYTES

    def chunks():  # no Content-Length: chunked transfer, counted as it arrives
        for start in range(0, len(too_big), 256 * 1024):
            yield too_big[start:start + 256 * 1024]

    with httpx.Client(base_url=server_url, timeout=30) as http:
        declared = http.post("/api/predict", content=too_big, headers={"Content-Type": "image/png"})
        streamed = http.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
        form = http.post("/api/predict", files={"file": ("big.png", too_big, "image/png")})
        just_under = http.post("/api/predict", content=too_big[:MAX_BODY_BYTES],
                               headers={"Content-Type": "image/png"})
    for response in (declared, streamed, form):
        assert "4 MiB" in assert_json_error(response, 413)
    assert_json_error(just_under, 400)  # at the limit it is read, and it is not an image


def test_concurrent_requests_each_get_their_own_answer(server_url, client, digits):
    """32 different digits at once, on one model instance: no answer goes to the wrong request."""
    images = digits[0][:32]
    bodies = [canvas_png(image) for image in images]
    expected = [client.post("/api/predict", content=body, headers={"Content-Type": "image/png"}).json()
                for body in bodies]
    answers: list = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def ask(index: int) -> None:
        with httpx.Client(base_url=server_url, timeout=60) as http:
            start.wait()
            answers[index] = http.post("/api/predict", content=bodies[index],
                                       headers={"Content-Type": "image/png"}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(answers, expected):
        assert got["digit"] == want["digit"] and got["image"] == want["image"]
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-5)


# --- the command ------------------------------------------------------------------------


def child_processes(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\nPPid:\t{pid}\n" in status.read_text():
                children.append(int(status.parent.name))
        except OSError:  # it ended while we looked
            pass
    return children


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_command_serves_and_stops_cleanly_on_ctrl_c(mlp_run, digits, spawn, workers):
    server = spawn([sys.executable, "-m", "mnist_digits.cli", "serve", str(mlp_run), "--port", "0",
                    "--workers", str(workers)])
    line = server.wait_for_line(lambda line: "http://127.0.0.1:" in line, timeout=120)
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert found, line
    assert ("2 worker processes" in line) == (workers == 2), line
    assert "(run by LiteRT)" in line, line  # the default engine: no TensorFlow in the server
    with httpx.Client(base_url=found.group(0), timeout=5) as http:
        for _ in range(1200):  # the line comes as the model loads (in each worker too)
            try:
                health = http.get("/api/health")
                break
            except httpx.TransportError:
                threading.Event().wait(0.1)
        assert health.json()["status"] == "ok"
        for image in digits[0]:  # enough requests to reach every worker
            answer = http.post("/api/predict", content=canvas_png(image),
                               headers={"Content-Type": "image/png"})
            assert answer.status_code == 200 and 0 <= answer.json()["digit"] <= 9
        answer = http.post("/api/predict", content=canvas_png(digits[0][0]),
                           headers={"Content-Type": "image/png"})
        assert answer.json()["digit"] == digits[1][0]
    workers_running = child_processes(server.process.pid)
    server.process.send_signal(signal.SIGINT)
    assert server.finish(timeout=60) == 0, server.output
    assert "Traceback" not in server.output
    for _ in range(100):  # multiprocessing's helper process ends a moment after its parent
        left = [pid for pid in workers_running if Path(f"/proc/{pid}").exists()]
        if not left:
            break
        threading.Event().wait(0.1)
    assert not left, "a worker outlived Ctrl-C"


def test_serve_command_says_so_when_the_port_is_taken(mlp_run, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", str(mlp_run), "--port", str(port)]) == 2
    error = capsys.readouterr().err.strip()
    assert f"127.0.0.1:{port}" in error and "--port" in error and len(error.splitlines()) == 1


def test_serve_command_refuses_a_missing_model_in_one_line(tmp_path, capsys):
    assert cli.main(["serve", str(tmp_path / "nothing"), "--port", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "does not exist" in error and len(error.splitlines()) == 1
