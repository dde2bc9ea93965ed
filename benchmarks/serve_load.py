"""Load test of `mnist-digits serve` on 127.0.0.1: N concurrent clients for T seconds.

    .venv/bin/python benchmarks/serve_load.py RUN_FOLDER [--clients 16] [--seconds 10] [--workers 1 2]
        [--paths general drawing]

Starts the real command (`mnist-digits serve MODEL --port 0 --quiet --workers W`) in its own
process, then keeps N keep-alive connections busy, each sending its next request as soon as
the last one is answered, for T seconds or at most --max-requests requests per scenario.
Each --engines, --workers and --paths choice gets its own server, one after the other in the
same run (default: TensorFlow running the Keras model, the baseline, then LiteRT; a single
process, then one worker per core), and a row per scenario. --paths general drawing gives
each two: one preparing every image by preprocess's general path
(MNIST_DIGITS_DRAWING_PATH=0), then one as shipped, where drawings take the cheaper drawing
path; the rows compare them ("vs general").
Scenarios:
    health    GET /api/health: the HTTP floor (server and client, no image work): the baseline
    canvas    POST /api/predict with a 140x140 PNG as the drawing page sends it (RGBA, opaque,
              #111 ink on white): MNIST test digits as the ink
    upload    photo-like JPEGs (MNIST test digits on lit, ruled paper, photographed:
              tests/photo_like.py), 500-1,000 px a side as the page sends a shrunk phone
              photo, as multipart field `file`: the page's photo-upload path
Prints answered requests/s (only 200 answers with a digit count), p50 and p99 latency,
errors, and req/s as a fraction of the baseline.
The target on 2 cores with the mlp model: canvas >= 800 req/s with 16 clients, p99 <= 50 ms,
no errors (for one process it was 300 req/s, p99 <= 100 ms). The client runs on the same
machine and takes its share of it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_digits.litert import ENGINES
from mnist_digits.predict import usable_cpus

try:
    import aiohttp  # a light client: httpx spends ~2 ms of CPU per request, aiohttp ~0.15
except ImportError:
    raise SystemExit("this benchmark needs aiohttp: .venv/bin/pip install aiohttp") from None

TARGET = {"rate": 800.0, "p99_ms": 50.0}
# How the server prepares images: its environment for each --paths choice.
PATHS = {"general": {"MNIST_DIGITS_DRAWING_PATH": "0"}, "drawing": {}}


def canvas_pngs(count: int = 64, side: int = 140) -> list[bytes]:
    """MNIST test digits as the drawing page sends them: 140x140 RGBA PNG, all opaque,
    #111 ink on white (serve/static/app.js)."""
    from mnist_digits.data import load_mnist

    digits = load_mnist().x_test[:count]
    pngs = []
    for digit in digits:
        ink = np.round(255 - digit * ((255 - 0x11) / 255)).astype(np.uint8)
        image = Image.fromarray(ink).resize((side, side), Image.Resampling.BILINEAR).convert("RGBA")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def photo_jpegs(count: int = 16) -> list[bytes]:
    """Phone-photo-like JPEGs of MNIST test digits, from the test suite's independent
    generator (its "reporting" digits are not used here: these are the first test digits)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import photo_like

    from mnist_digits.data import load_mnist

    rng = np.random.default_rng(0)
    digits = load_mnist().x_test[:count]
    return [photo_like.photograph(photo_like.distorted(photo_like.mnist_ink(digit, int(rng.integers(250, 400))),
                                                       rng), rng)
            for digit in digits]


def start_server(model: str, *options: str, environment: dict | None = None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "mnist_digits.cli", "serve", model, "--port", "0", "--quiet", *options]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **(environment or {})})
    deadline = time.monotonic() + 120
    for line in server.stdout:
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if found:
            url = found.group(1)
            break
        if time.monotonic() > deadline:
            break
    else:
        raise SystemExit(f"the server did not start: {server.wait()}")
    # Keep reading its output so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    while time.monotonic() < deadline:  # the line comes as the model loads; wait for uvicorn
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2):
                wait_until_idle(server.pid, deadline)
                return server, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not answer /api/health")


def wait_until_idle(pid: int, deadline: float) -> None:
    """Until the server's processes use almost no CPU: every --workers process has loaded
    its model and accepts connections. (The first one to answer would otherwise get all of
    the benchmark's connections, which stay with it: measured 16 of 16.)"""
    used = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        used, before = cpu_seconds(pid), used
        if used - before < 0.05:
            return


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process `pid` and its worker processes, or
    by this one."""
    if pid is None:
        usage = os.times()
        return usage.user + usage.system
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while we looked
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # the server or its child
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def request_maker(scenario: str, pngs: list[bytes], jpegs: list[bytes]):
    """(session, i) -> the i-th request of `scenario`, as an aiohttp request context."""
    if scenario == "health":
        return lambda session, i: session.get("/api/health")
    if scenario == "canvas":
        return lambda session, i: session.post("/api/predict", data=pngs[i % len(pngs)],
                                               headers={"Content-Type": "image/png"})
    if scenario == "upload":
        def upload(session, i):
            form = aiohttp.FormData()
            form.add_field("file", jpegs[i % len(jpegs)], filename="photo.jpg", content_type="image/jpeg")
            return session.post("/api/predict", data=form)
        return upload
    raise ValueError(scenario)


async def run_load(url: str, make_request, clients: int, seconds: float, max_requests: int,
                   server_pid: int) -> dict:
    latencies: list[float] = []
    errors = 0
    issued = 0

    async def send(session, i) -> bool:
        """Whether the request got a real answer: 200, and for a prediction, a digit."""
        async with make_request(session, i) as response:
            body = await response.json(content_type=None)
            return response.status == 200 and ("digit" in body or body.get("status") == "ok")

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        # Warm-up: open the connections, trace the model's call for the batch sizes to come.
        await asyncio.gather(*(send(session, i) for i in range(clients * 4)))
        started = time.perf_counter()
        deadline = started + seconds
        cpu_before = cpu_seconds(server_pid), cpu_seconds()

        async def one_client():
            nonlocal errors, issued
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                sent = time.perf_counter()
                try:
                    answered = await send(session, issued)
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                    answered = False
                if answered:  # an error answer is often fast: it must not count as throughput
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        server_cpu, client_cpu = cpu_seconds(server_pid) - cpu_before[0], cpu_seconds() - cpu_before[1]
    latency_ms = np.array(latencies) * 1000.0
    if not latencies:
        raise SystemExit(f"no request was answered ({errors} errors)")
    return {"requests": len(latencies), "errors": errors, "rate": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(latency_ms, 50)), "p99_ms": float(np.percentile(latency_ms, 99)),
            "server_cpu_ms": server_cpu * 1000 / len(latencies), "client_cpu_ms": client_cpu * 1000 / len(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="run folder or model file (the target is for the mlp model)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per scenario (default: 10)")
    parser.add_argument("--max-requests", type=int, default=20000, help="cap per scenario (default: 20000)")
    parser.add_argument("--scenarios", default="health,canvas,upload", help="comma-separated")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, usable_cpus()],
                        help="server processes, one server each in turn (default: 1, the baseline, "
                             f"then {usable_cpus()}: one per core)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=["tensorflow", "litert"],
                        help="what runs a Keras model, one server each in turn (default: tensorflow, "
                             "the baseline, then litert)")
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=["drawing"],
                        help="how images are prepared, one server each in turn: 'general' (the drawing "
                             "path off, the baseline) and/or 'drawing' (as shipped; the default)")
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 120:
        parser.error("--clients must be 1-256 and --seconds 0-120")

    pngs, jpegs = canvas_pngs(), photo_jpegs()
    results = {}
    for engine, workers, path in itertools.product(args.engines, args.workers, args.paths):
        server, url = start_server(args.model, "--workers", str(workers), "--engine", engine,
                                   environment=PATHS[path])
        try:
            for scenario in args.scenarios.split(","):
                results[engine, workers, path, scenario] = asyncio.run(run_load(
                    url, request_maker(scenario, pngs, jpegs), args.clients, args.seconds,
                    args.max_requests, server.pid))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)

    print(f"\n{args.clients} clients, {args.seconds:g} s per scenario, servers on 127.0.0.1 "
          f"({os.cpu_count()} CPUs, shared with the client)")
    print(f"{'engine':<10} {'workers':>7} {'path':<8} {'scenario':<10} {'answered':>9} {'errors':>7} "
          f"{'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs health':>10} {'vs 1 worker':>12} "
          f"{'vs tensorflow':>14} {'vs general':>11} {'server CPU ms/req':>18} {'vs general':>11} "
          f"{'client CPU ms/req':>18}")

    def ratio(result, baseline, measure: str = "rate") -> str:
        return f"{result[measure] / baseline[measure]:.2f}x" if baseline else "-"

    for (engine, workers, path, scenario), result in results.items():
        general = results.get((engine, workers, "general", scenario))
        print(f"{engine:<10} {workers:>7} {path:<8} {scenario:<10} {result['requests']:>9} {result['errors']:>7} "
              f"{result['rate']:>8.0f} {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f} "
              f"{ratio(result, results.get((engine, workers, path, 'health'))):>10} "
              f"{ratio(result, results.get((engine, 1, path, scenario))):>12} "
              f"{ratio(result, results.get(('tensorflow', workers, path, scenario))):>14} "
              f"{ratio(result, general):>11} {result['server_cpu_ms']:>18.2f} "
              f"{ratio(result, general, 'server_cpu_ms'):>11} {result['client_cpu_ms']:>18.2f}")
    for (engine, workers, path, scenario), canvas in results.items():
        if scenario == "canvas":
            met = (canvas["rate"] >= TARGET["rate"] and canvas["p99_ms"] <= TARGET["p99_ms"]
                   and canvas["errors"] == 0)
            print(f"target (mlp, 16 clients, 2 cores): canvas >= {TARGET['rate']:.0f} req/s, "
                  f"p99 <= {TARGET['p99_ms']:.0f} ms, 0 errors, {engine}, {workers} worker(s), {path} path: "
                  f"{'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
