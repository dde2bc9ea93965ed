"""The HTTP API and the drawing page: a FastAPI app over one Predictor.

    GET  /                    the drawing page (static/: every asset served here, no CDN)
    POST /api/predict         one image: multipart field `file`, or a raw body with an image/* type
    POST /api/predict/batch   up to MAX_BATCH images: multipart fields `files`; one answer or error each
    POST /api/read            a whole number: its digits, boxes and confidences (read_api.py)
    GET  /api/health          {"status": "ok"}
    GET  /api/model           the served model: name, parameters, test accuracy from its run
    GET  /docs, /redoc        OpenAPI docs (assets served here too)
    POST /api/feedback, GET /api/feedback/summary   added by feedback_api.with_feedback

An answer is {"digit", "confidence", "probabilities", "unsure", "image"}, where "image" is the
28x28 picture the model saw after preparation, as a PNG data URL.

Every error is JSON {"error": "<one line>"}, never a traceback:
    400  malformed multipart, no `file` field, or bytes that are not a readable image
         (damaged, unknown format, too many pixels: decompression bombs stop here)
    408  a body that did not arrive within limits.BODY_SECONDS
    413  a body over MAX_BODY_BYTES (Content-Length checked first, bytes counted while reading)
    415  a body that is neither multipart/form-data nor image/*
    422  a readable image with no digit in it (a blank canvas): "no digit found ..."
    503  the queue of requests waiting for a core is full; Retry-After says when to retry
except a Host header outside `allowed_hosts`: Starlette's plain-text 400 "Invalid host header".

Preparation and prediction are predict.Predictor's, shared with `mnist-digits predict`: one
model instance, its traced call, calls one at a time under its lock. Each request is decoded,
prepared and predicted in a worker thread, off the event loop, at most one per usable core
(limits.CpuQueue) -- except a small image in a process with one core of its own, prepared on
the loop (INLINE_BYTES); a batch decodes at most REQUEST_PIXELS. The limits are in limits.py.

No micro-batching: under load (16 clients) over 80% of model calls would hold one image
anyway, since preparing an image (1.5 to 4 ms for the page's 140x140 drawing) costs far more
than the model call (0.1 to 0.4 ms); a batcher measured no faster and added a thread hop.
"""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__, preprocess
from ..decode import PixelBudget, open_image
from ..errors import InputImageError, NoDigitFound, TooManyMarks
from ..predict import Answer, Failure, usable_cpus
# How a request carries one image, shared with /api/read (read_api.py).
from .bodies import IMAGE_BODY as _IMAGE_BODY
from .bodies import PREDICT_BODY as _PREDICT_BODY
from .bodies import image_data_url, media_type, read_single_image, single_image_errors
from .limits import CpuQueue, RequestLimits, SecurityHeaders
from .read_api import read_router

MAX_BATCH = 64
# Pixels one request may have decoded in all (a batch of 64 drawings is ~5 million):
# past it, the rest of a batch is refused unread, so no request costs seconds of CPU.
REQUEST_PIXELS = 32_000_000
# An image this small (the page's drawing: 140x140 px, a few KiB) is prepared on the event
# loop when the process has one core to itself: handing it to a worker thread cost more
# CPU than the hand-off saved (server CPU per drawing 2.7 ms through a thread, 2.0 ms on
# the loop; serve_load.py, --workers 2). Larger ones go to the worker threads, so that a
# photo never holds up the requests behind it.
INLINE_BYTES = 64 * 1024
INLINE_PIXELS = 512 * 512
# The Host names a browser may reach the server by (DNS rebinding sends others).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
STATIC_DIR = Path(__file__).parent / "static"

_BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
        "files": {"type": "array", "items": _IMAGE_BODY, "maxItems": MAX_BATCH}}}},
}}}


def answer_json(answer: Answer | Failure) -> dict:
    """The API's JSON for an answer (with the prepared image), or {"error": "<one line>"}."""
    if isinstance(answer, Failure):
        return {"error": answer.error}
    return {
        "digit": answer.digit,
        "confidence": answer.confidence,
        "probabilities": answer.probabilities,
        "unsure": answer.unsure,
        "image": image_data_url(answer.prepared),
    }


def image_error_status(error: InputImageError) -> int:
    """422 for a readable image that holds no digit (or no number), 400 for anything unreadable."""
    return 422 if isinstance(error, (NoDigitFound, TooManyMarks)) else 400


def read_digit(predictor, data: bytes) -> dict:
    """Image bytes -> the answer JSON (a bad image raises InputImageError: see image_error_status)."""
    return answer_json(predictor.predict_image(data))


def is_small_image(data: bytes) -> bool:
    """Whether `data` is cheap to prepare: at most INLINE_BYTES holding at most INLINE_PIXELS
    (from the header; bytes that are no image are refused as fast)."""
    if len(data) > INLINE_BYTES:
        return False
    try:
        width, height = open_image(data).size
    except InputImageError:
        return True
    return width * height <= INLINE_PIXELS


def read_digits(predictor, items: list[bytes], budget: PixelBudget) -> list[dict]:
    """Each image's answer JSON, or {"error": "<one line>"}; one model call for them all,
    the images decoded within `budget`."""
    prepared = preprocess.prepare_many(items, budget)
    return [answer_json(answer) for answer in predictor.answer_prepared(prepared)]


async def read_batch_images(request: Request) -> list[bytes]:
    if media_type(request) != "multipart/form-data":
        raise HTTPException(415, "send multipart/form-data with one 'files' field per image")
    async with request.form(max_files=MAX_BATCH, max_fields=10) as form:
        uploads = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
        if not uploads:
            raise HTTPException(400, f"send 1 to {MAX_BATCH} images as multipart file fields 'files'")
        return [await upload.read() for upload in uploads]


def model_summary(predictor) -> dict:
    classifier = predictor.classifier
    return {
        "name": classifier.name,
        "parameters": classifier.parameter_count,
        "test_accuracy": classifier.info.get("test", {}).get("accuracy"),
        "calibration_temperature": predictor.temperature,
        "unsure_below": predictor.unsure_below,
    }


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(predictor, allowed_hosts=LOOPBACK_HOSTS, threads: int | None = None) -> FastAPI:
    """The app serving `predictor` (a predict.Predictor: one model instance, traced call)
    to requests whose Host is one of `allowed_hosts` (loopback names by default), preparing
    images in `threads` worker threads (default: one per usable core); with one, small
    images are prepared on the event loop instead (INLINE_BYTES)."""
    threads = threads or usable_cpus()
    # FastAPIOffline: FastAPI whose /docs and /redoc load Swagger UI and ReDoc from the app,
    # not from a CDN, so the docs work offline too.
    app = FastAPIOffline(
        title="mnist-digits",
        summary="Read a handwritten digit: draw it on the page at /, or POST an image.",
        version=__version__,
    )
    cpu_work = app.state.cpu_work = CpuQueue(workers=threads)  # feedback_api's too
    summary = model_summary(predictor)

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        return error_response(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(InputImageError)  # from any route: /api/predict, /api/read, /api/feedback
    async def image_error(request, error: InputImageError):
        return error_response(image_error_status(error), str(error))

    @app.exception_handler(Exception)
    async def unexpected_error(request, error: Exception):  # a bug: uvicorn logs its traceback
        return error_response(500, "internal error; the server log has the details")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/health", summary="Is the server up")
    async def health():
        return {"status": "ok", "model": summary["name"]}

    @app.get("/api/model", summary="The served model: name, parameters, test accuracy")
    async def model():
        return summary

    @app.post("/api/predict", summary="Read the digit in one image", openapi_extra=_PREDICT_BODY,
              responses=single_image_errors("no digit found in the image"))
    async def predict(request: Request):
        data = await read_single_image(request)
        if threads == 1 and is_small_image(data):
            return JSONResponse(read_digit(predictor, data))
        return JSONResponse(await cpu_work.run(request, read_digit, predictor, data))

    @app.post("/api/predict/batch", summary=f"Read the digits in up to {MAX_BATCH} images",
              openapi_extra=_BATCH_BODY,
              responses={200: {"description": '{"results": [answer or {"error": ...}, ...]} in order'}})
    async def predict_batch(request: Request):
        items = await read_batch_images(request)
        stop = threading.Event()  # set if the client leaves: the rest of the batch is skipped
        budget = PixelBudget(REQUEST_PIXELS, stop)
        return {"results": await cpu_work.run(request, read_digits, predictor, items, budget, stop=stop)}

    app.include_router(read_router(predictor, cpu_work))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Outermost last: every answer gets the security headers, a wrong Host is refused
    # before its body is read.
    app.add_middleware(RequestLimits)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders)
    return app
