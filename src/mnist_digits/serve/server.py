"""Running the app: bind a socket (a clear error if the port is taken), then uvicorn.

`serve()` is what `mnist-digits serve` calls; `running()` starts the same server in a
background thread, for tests and notebooks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import UsageError
from .app import LOOPBACK_HOSTS

# A request's line and headers must have arrived this many seconds after the connection
# opened (or after the previous answer on a kept-alive one): half-sent requests would
# otherwise hold connections forever, and enough of them starve everyone else.
HEADER_SECONDS = 10
# Idle kept-alive connections are closed after this many seconds.
KEEP_ALIVE_SECONDS = 5
# At most this many open connections; more are answered 503 by uvicorn.
MAX_CONNECTIONS = 512
# A request line with its headers of at most this many bytes (larger: 400, connection closed).
MAX_HEADER_BYTES = 16 * 1024

# How the parent tells its worker processes (--workers) what to serve: the model, and the
# Host names to answer (a JSON list).
WORKER_MODEL_VARIABLE = "MNIST_DIGITS_SERVE_MODEL"
WORKER_HOSTS_VARIABLE = "MNIST_DIGITS_SERVE_HOSTS"
WORKER_FEEDBACK_VARIABLE = "MNIST_DIGITS_SERVE_FEEDBACK_DB"
WORKER_ENGINE_VARIABLE = "MNIST_DIGITS_SERVE_ENGINE"
WORKER_THREADS_VARIABLE = "MNIST_DIGITS_SERVE_THREADS"


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: any free port)."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (got {port})")
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise UsageError(f"cannot resolve host {host!r} ({error.strerror}); pass --host 127.0.0.1") from None
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({error.strerror}); "
                         "choose another --port (or stop what is using it)") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (C parsing: a third less server CPU per request than
    h11, measured), closing a connection whose request line and headers take more than
    HEADER_SECONDS to arrive or exceed MAX_HEADER_BYTES: uvicorn times out idle
    connections, not half-sent requests, and httptools sets no size limit of its own."""

    header_timer = None
    header_bytes = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()  # the headers are in: the body has its own limit (limits.py)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start_header_timer()

    def connection_lost(self, exc) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _count_header_bytes(self, count: int) -> None:
        self.header_bytes += count
        if self.header_bytes > MAX_HEADER_BYTES:
            # Raised inside feed_data: uvicorn answers it 400 and closes the connection.
            raise httptools.HttpParserError(f"request headers over {MAX_HEADER_BYTES // 1024} KiB")

    def _start_header_timer(self) -> None:
        self._stop_header_timer()
        self.header_timer = self.loop.call_later(HEADER_SECONDS, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_too_slow(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app, access_log: bool = True, log_level: str = "info", **options) -> uvicorn.Config:
    """uvicorn's settings for one server process (limits are per process)."""
    return uvicorn.Config(
        app, access_log=access_log, log_level=log_level, timeout_graceful_shutdown=5,
        http=GuardedHttpProtocol, loop="auto", timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=MAX_CONNECTIONS, **options)


def make_server(app, access_log: bool = True, log_level: str = "info") -> uvicorn.Server:
    return uvicorn.Server(server_config(app, access_log, log_level))


def use_one_thread_per_model_call() -> None:
    """Concurrent requests are the server's parallelism: TensorFlow's own worker threads
    would spin on the cores that decoding and preparing the next requests need (measured:
    a one-image call costs 0.36 ms of CPU on one thread, 0.46 ms with the default pools).
    Said through TensorFlow's environment variables, not its API, so that serving a TFLite
    export never imports TensorFlow (about 600 MiB of memory)."""
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def worker_app():
    """The app of one --workers process: it loads the model the parent named (and opens
    the feedback store it named, if any)."""
    from ..predict import Predictor
    from .app import create_app
    from .feedback_api import with_feedback

    use_one_thread_per_model_call()
    predictor = Predictor.from_path(os.environ[WORKER_MODEL_VARIABLE], os.environ[WORKER_ENGINE_VARIABLE])
    app = create_app(predictor, allowed_hosts=json.loads(os.environ[WORKER_HOSTS_VARIABLE]),
                     threads=int(os.environ[WORKER_THREADS_VARIABLE]))
    if os.environ.get(WORKER_FEEDBACK_VARIABLE):
        from ..feedback import open_store

        app = with_feedback(app, predictor, open_store(os.environ[WORKER_FEEDBACK_VARIABLE]))
    return app


def run_workers(model, engine: str, sock: socket.socket, workers: int, access_log: bool,
                hosts: list[str], feedback_db: str | None = None) -> None:
    """Serve from `workers` processes accepting on the one socket: preparing a drawing is
    Python holding the GIL, so one process keeps about one core busy however many threads
    it has. uvicorn's supervisor spawns them and replaces any that die."""
    from uvicorn.supervisors import Multiprocess

    from ..predict import usable_cpus

    os.environ[WORKER_MODEL_VARIABLE] = os.path.abspath(model)
    os.environ[WORKER_ENGINE_VARIABLE] = engine
    os.environ[WORKER_HOSTS_VARIABLE] = json.dumps(hosts)
    os.environ[WORKER_FEEDBACK_VARIABLE] = feedback_db or ""
    # The cores shared out: with one each (the default), page drawings skip the thread hand-off.
    os.environ[WORKER_THREADS_VARIABLE] = str(max(1, usable_cpus() // workers))
    # Loading TensorFlow on a busy machine can keep a new worker from answering the
    # supervisor's pings for several seconds.
    config = server_config(f"{__name__}:worker_app", access_log, factory=True, workers=workers,
                           timeout_worker_healthcheck=60)
    Multiprocess(config, sockets=[sock]).run()


def serve(model, host: str = "127.0.0.1", port: int = 8000, access_log: bool = True,
          allow_hosts: tuple[str, ...] = (), workers: int = 1, feedback_db: str | None = None,
          engine: str = "litert") -> None:
    """Serve the page and API for `model` (run folder or model file) until Ctrl-C, from
    `workers` processes, to requests whose Host is a loopback name, `host` itself or one
    of `allow_hosts`; with `feedback_db` (a file name or postgresql:// URL), collect
    corrections there. A Keras model runs through `engine` (litert.ENGINES)."""
    from ..classifiers import TFLiteClassifier
    from ..predict import load_predictor
    from .app import create_app
    from .feedback_api import with_feedback

    if workers < 1:
        raise UsageError(f"--workers must be at least 1 (got {workers})")
    sock = bind(host, port)  # before the model loads: a taken port fails at once
    use_one_thread_per_model_call()
    store = None
    try:
        if feedback_db:  # a store that cannot be opened or written fails now, not at a request
            from ..feedback import open_store

            store = open_store(feedback_db)
        predictor, engine = load_predictor(model, engine)  # the engine it runs on
    except BaseException:
        sock.close()
        if store is not None:
            store.close()
        raise
    sock.listen(2048)  # from here connections wait for uvicorn instead of being refused
    processes = f" from {workers} worker processes" if workers > 1 else ""
    runtime = "LiteRT" if isinstance(predictor.classifier, TFLiteClassifier) else "TensorFlow"
    print(f"Serving {predictor.classifier.name} (run by {runtime}) at {url_of(sock)}/{processes} "
          "(API docs at /docs); Ctrl-C stops.", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Note: {host} makes the server reachable from other machines; "
              "it has no authentication.", flush=True)
    if store is not None:
        print(f"Collecting corrections in {store.name}.", flush=True)
    try:
        hosts = allowed_hosts(host, allow_hosts)
        if workers > 1:
            run_workers(model, engine, sock, workers, access_log, hosts, feedback_db)
        else:
            app = create_app(predictor, allowed_hosts=hosts)
            if store is not None:
                app = with_feedback(app, predictor, store)
            make_server(app, access_log=access_log).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then passes Ctrl-C on
        pass
    finally:
        if store is not None:
            store.close()
    print("Stopped.", flush=True)


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The Host names to answer: loopback ones, the address served on (unless it is every
    address), and the extra ones, IPv6 addresses in brackets as they appear in Host."""
    names = [*LOOPBACK_HOSTS, *([] if host in ("0.0.0.0", "::", "") else [host]), *extra]
    return list(dict.fromkeys(f"[{name}]" if ":" in name and not name.startswith("[") else name.lower()
                              for name in names))


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
    """Run `app` in a background thread; yield its base URL; stop it on exit."""
    sock = bind(host, port)
    server = make_server(app, access_log=False, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout)
