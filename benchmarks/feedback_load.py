"""Load test of feedback collection: 16 clients posting corrections for 10 s to
`mnist-digits serve --feedback-db`, against SQLite and against PostgreSQL.

    .venv/bin/python benchmarks/feedback_load.py RUN_FOLDER [--clients 16] [--seconds 10]

For each store: start a fresh one (SQLite: a file in a temporary folder; PostgreSQL: a
throw-away server from tests/postgres_server.py, with fsync on), start the real command with it, run
the baseline -- POST /api/predict with the same drawings, the page's prediction request --
then POST /api/feedback: every request a new drawing (a PNG text chunk makes its bytes
unique), every tenth a repeat of an earlier one. Afterwards the rows are counted: each
acknowledged new drawing must be there exactly once, each repeat counted, no row extra.
Prints posts/s (new rows/s: without the repeats), p50/p99, 5xx and other errors, and the
post rate as a fraction of the baseline's.
Target (issue 13): zero lost or duplicated rows, zero 5xx, on both stores.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_server import fresh_database, postgres_bin, running_postgresql  # noqa: E402
from serve_load import aiohttp, canvas_pngs, request_maker, run_load, start_server  # noqa: E402

from mnist_digits.feedback import open_store  # noqa: E402

REPEAT_EVERY = 10


def unique_png(png: bytes, number: int) -> bytes:
    """The same picture with a tEXt chunk carrying `number` before IEND: other bytes."""
    data = b"request\0" + str(number).encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]


async def post_feedback(url: str, pngs: list[bytes], clients: int, seconds: float) -> dict:
    """Each client posts until the deadline. Returns counts of what the server acknowledged."""
    acknowledged_new: set[str] = set()
    repeats_acknowledged = 0
    server_errors = other_errors = 0
    latencies: list[float] = []
    number = 0

    async def post(session, body: bytes, label: int):
        form = aiohttp.FormData()
        form.add_field("file", body, filename="drawing.png", content_type="image/png")
        form.add_field("label", str(label))
        async with session.post("/api/feedback", data=form) as response:
            return response.status, (await response.json()) if response.status < 500 else None

    async def one_client(session, deadline: float):
        nonlocal number, repeats_acknowledged, server_errors, other_errors
        while time.perf_counter() < deadline:
            number += 1
            mine = number
            # A repeat re-sends the drawing before it, which may still be on its way.
            drawing = mine - 1 if mine % REPEAT_EVERY == 0 else mine
            body = unique_png(pngs[drawing % len(pngs)], drawing)
            sent = time.perf_counter()
            try:
                status, reply = await post(session, body, mine % 10)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                other_errors += 1
                continue
            latencies.append(time.perf_counter() - sent)
            if status >= 500:
                server_errors += 1
            elif status != 200:
                other_errors += 1
            elif reply["duplicate"]:
                repeats_acknowledged += 1
            else:
                acknowledged_new.add(reply["id"])

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one_client(session, started + seconds) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    latency_ms = np.array(latencies) * 1000
    return {"new": len(acknowledged_new), "repeats": repeats_acknowledged, "server_errors": server_errors,
            "other_errors": other_errors, "rate": len(latencies) / elapsed,
            "rows_rate": len(acknowledged_new) / elapsed,
            "p50_ms": float(np.percentile(latency_ms, 50)), "p99_ms": float(np.percentile(latency_ms, 99))}


def measure(model: str, store_url: str, pngs: list[bytes], clients: int, seconds: float) -> dict:
    open_store(store_url).close()  # created before the server, as a deployment would
    server, url = start_server(model, "--feedback-db", store_url)
    try:
        baseline = asyncio.run(run_load(url, request_maker("canvas", pngs), clients, seconds, 10**6, server.pid))
        result = asyncio.run(post_feedback(url, pngs, clients, seconds))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    store = open_store(store_url)
    summary = store.summary()
    store.close()
    result.update(baseline_rate=baseline["rate"], baseline_errors=baseline["errors"],
                  rows=summary["count"], counted_repeats=summary["duplicates"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="run folder or model file")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per scenario (default: 10)")
    args = parser.parse_args()
    pngs = canvas_pngs()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        results["sqlite"] = measure(args.model, str(Path(folder) / "feedback.sqlite"), pngs,
                                    args.clients, args.seconds)
    if postgres_bin() is None:
        print("PostgreSQL is not installed: SQLite only", file=sys.stderr)
    else:
        with running_postgresql(durable=True) as admin_url, fresh_database(admin_url, "feedback_load") as url:
            results["postgresql"] = measure(args.model, url, pngs, args.clients, args.seconds)

    print(f"\n{args.clients} clients, {args.seconds:g} s each; baseline: POST /api/predict with the same drawings")
    print(f"{'store':<11} {'posts/s':>7} {'rows/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'5xx':>4} {'other':>6} {'new':>6} "
          f"{'rows':>6} {'repeats':>8} {'counted':>8} {'predict/s':>10} {'vs predict':>11}  verdict")
    failed = False
    for name, r in results.items():
        exact = r["rows"] == r["new"] and r["counted_repeats"] == r["repeats"]
        ok = exact and r["server_errors"] == 0 and r["other_errors"] == 0
        failed |= not ok
        print(f"{name:<11} {r['rate']:>7.0f} {r['rows_rate']:>7.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['server_errors']:>4} "
              f"{r['other_errors']:>6} {r['new']:>6} {r['rows']:>6} {r['repeats']:>8} {r['counted_repeats']:>8} "
              f"{r['baseline_rate']:>10.0f} {r['rate'] / r['baseline_rate']:>10.2f}x  "
              f"{'no row lost or doubled' if ok else 'FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
