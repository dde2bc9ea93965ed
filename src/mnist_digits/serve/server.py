"""Running the app: bind a socket (a clear error if the port is taken), then uvicorn.

`serve()` is what `mnist-digits serve` calls; `running()` starts the same server in a
background thread, for tests and notebooks.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn

from ..errors import UsageError


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


def make_server(app, access_log: bool = True, log_level: str = "info") -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, access_log=access_log, log_level=log_level,
                                         timeout_graceful_shutdown=5))


def use_one_thread_per_model_call() -> None:
    """Concurrent requests are the server's parallelism: TensorFlow's own worker threads
    would spin on the cores that decoding and preparing the next requests need (measured:
    a one-image call costs 0.36 ms of CPU on one thread, 0.46 ms with the default pools)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran something in this process: keep its pools
        pass


def serve(model, host: str = "127.0.0.1", port: int = 8000, access_log: bool = True,
          feedback_db: str | None = None) -> None:
    """Serve the page and API for `model` (run folder or model file) until Ctrl-C; with
    `feedback_db` (a file name or postgresql:// URL), collect corrections there."""
    from ..predict import Predictor
    from .app import create_app
    from .feedback_api import with_feedback

    sock = bind(host, port)  # before the model loads: a taken port fails at once
    use_one_thread_per_model_call()
    store = None
    try:
        if feedback_db:  # a store that cannot be opened or written fails now, not at a request
            from ..feedback import open_store

            store = open_store(feedback_db)
        predictor = Predictor.from_path(model)
    except BaseException:
        sock.close()
        if store is not None:
            store.close()
        raise
    sock.listen(2048)  # from here connections wait for uvicorn instead of being refused
    print(f"Serving {predictor.classifier.name} at {url_of(sock)}/ (API docs at /docs); Ctrl-C stops.",
          flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Note: {host} makes the server reachable from other machines; "
              "it has no authentication.", flush=True)
    if store is not None:
        print(f"Collecting corrections in {store.name}.", flush=True)
    try:
        app = create_app(predictor) if store is None else with_feedback(create_app(predictor), predictor, store)
        make_server(app, access_log=access_log).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then passes Ctrl-C on
        pass
    finally:
        if store is not None:
            store.close()
    print("Stopped.", flush=True)


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
