"""What keeps one client from costing the server more than its share.

    RequestLimits     bodies: at most MAX_BODY_BYTES, arriving within BODY_SECONDS; an
                      oversized one is read and discarded (up to DISCARD_BYTES) before its
                      413, as nginx does, so that ordinary clients receive the answer
    SecurityHeaders   nosniff, no framing, a Content-Security-Policy the page works with
    CpuQueue          preparing images: one at a time per usable core, a bounded queue
                      (503 with Retry-After beyond it), nothing done for a client that left

The allowed Host names are Starlette's TrustedHostMiddleware (app.py); half-sent headers
and idle connections are uvicorn's, with the timeouts set in server.py.
"""

from __future__ import annotations

import threading

import anyio
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

MAX_BODY_BYTES = 4 * 1024 * 1024
# A body must have arrived whole this many seconds after the request began.
BODY_SECONDS = 30
# An oversized body is read up to this many bytes before the 413: a client that is
# still sending when the connection closes sees "connection reset", not the answer.
DISCARD_BYTES = 16 * 1024 * 1024
# Requests waiting for a core (beyond the ones being prepared) before the server says 503.
MAX_WAITING = 64
RETRY_AFTER_SECONDS = 1
# While a batch is prepared, how often to look whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.05


def too_large_message() -> str:
    return f"request body over {MAX_BODY_BYTES // 2**20} MiB; send a smaller image"


class RequestLimits:
    """ASGI middleware: bodies of at most `max_bytes` that arrive within `seconds`;
    never buffering more than that. A declared Content-Length over the limit is answered
    413 without passing the request on; a body without one (chunked) is counted as it
    arrives. Either way the rest is read and dropped (at most DISCARD_BYTES), then the
    413 goes out and the connection is closed."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES, seconds: float = BODY_SECONDS):
        self.app = app
        self.max_bytes = max_bytes
        self.seconds = seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            return await JSONResponse({"error": "bad Content-Length"}, status_code=400,
                                      headers={"Connection": "close"})(scope, receive, send)
        deadline = anyio.current_time() + self.seconds
        received = 0
        body_done = False

        async def limited_receive():
            nonlocal received, body_done
            if body_done:  # only the disconnect is left to hear about: no deadline on that
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise HTTPException(408, f"the request body did not arrive within {self.seconds} s",
                                    headers={"Connection": "close"})
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > self.max_bytes:
                await discard_rest()
                raise HTTPException(413, too_large_message(), headers={"Connection": "close"})
            return message

        async def discard_rest():
            nonlocal received, body_done
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
                while not body_done and received <= DISCARD_BYTES:
                    message = await receive()
                    received += len(message.get("body", b""))
                    body_done = message["type"] != "http.request" or not message.get("more_body", False)

        if declared is not None and int(declared) > self.max_bytes:
            await discard_rest()
            return await JSONResponse({"error": too_large_message()}, status_code=413,
                                      headers={"Connection": "close"})(scope, receive, send)
        await self.app(scope, limited_receive, send)


# The page's own script and style files; images it shows are data: URLs (the prepared
# digit, the empty favicon). Scripts change styles through the DOM only, which a CSP allows.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
               "form-action 'self'; frame-ancestors 'none'")
# /docs and /redoc start Swagger UI and ReDoc with an inline script, and ReDoc uses a worker.
DOCS_POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
               "frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")


class SecurityHeaders:
    """ASGI middleware: headers that stop browsers from guessing types, framing the page
    (clickjacking) and running anything the page did not ship."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        policy = DOCS_POLICY if scope["path"].startswith(DOCS_PATHS) else PAGE_POLICY
        added = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                 (b"content-security-policy", policy.encode()), (b"referrer-policy", b"no-referrer")]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CpuQueue:
    """CPU work for requests: `workers` at a time (more threads than cores only fight
    over the GIL), at most `waiting` more queued -- beyond that 503 with Retry-After, so
    a burst costs its senders a retry instead of everyone a long wait. A request whose
    client has gone by the time a worker is free is dropped, not computed; a batch whose
    client goes while it is prepared stops at its next image."""

    def __init__(self, workers: int, waiting: int = MAX_WAITING):
        self.limiter = anyio.CapacityLimiter(workers)
        self.capacity = workers + waiting
        self.queued = 0

    async def run(self, request, function, *args, stop: threading.Event | None = None):
        """`function(*args)` in a worker thread, in turn; `stop`, when given, is set if
        the client disconnects while it runs (for work that can stop part-way)."""
        if self.queued >= self.capacity:
            raise HTTPException(503, "the server is busy; try again in a second",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.queued += 1
        try:
            async with self.limiter:
                if await request.is_disconnected():
                    # Nobody will read it: the status is for the access log (nginx's "client closed").
                    raise HTTPException(499, "the client disconnected before its turn")
                if stop is None:
                    return await anyio.to_thread.run_sync(function, *args)
                async with anyio.create_task_group() as watcher:
                    watcher.start_soon(_set_when_gone, request, stop)
                    try:
                        return await anyio.to_thread.run_sync(function, *args)
                    finally:
                        watcher.cancel_scope.cancel()
        finally:
            self.queued -= 1


async def _set_when_gone(request, stop: threading.Event) -> None:
    while not await request.is_disconnected():
        await anyio.sleep(DISCONNECT_POLL_SECONDS)
    stop.set()
