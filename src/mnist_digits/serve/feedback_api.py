"""The feedback routes, added to the app only when `serve` was given a store (--feedback-db):

    POST /api/feedback          multipart: `file` = the drawing (the PNG sent for prediction),
                                `label` = the right digit 0-9, `predicted` = the model's answer
                                (optional; the served model's own answer when left out)
                                -> {"id": ..., "duplicate": false}
    GET  /api/feedback/summary  counts per digit, repeats, the served model's accuracy on them

Without a store these paths answer 404, which is how the page knows to hide its buttons.
Errors are the app's JSON {"error": ...}: 400 bad field or image, 413 too big, 415 not
multipart, 422 no digit in the image, 503 the server is busy (or the store went away);
nothing is stored then. The same drawing sent again
answers its first id with "duplicate": true and is counted, not stored again.
"""

from __future__ import annotations

import contextlib

import anyio
from fastapi import APIRouter, FastAPI, Request
from starlette.exceptions import HTTPException

from ..errors import FeedbackStoreError
from .app import model_summary
from .bodies import media_type, read_upload
from .limits import CpuQueue

_FEEDBACK_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file", "label"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "label": {"type": "integer", "minimum": 0, "maximum": 9},
        "predicted": {"type": "integer", "minimum": 0, "maximum": 9}}}},
}}}


def digit_field(fields: dict[str, str], name: str) -> int | None:
    """A form field holding one digit 0-9; None when it was not sent."""
    value = fields.get(name)
    if value is None:
        return None
    if value.strip() not in tuple("0123456789"):
        raise HTTPException(400, f"'{name}' must be one digit 0-9 (got {value[:20]!r})")
    return int(value)


@contextlib.contextmanager
def store_errors_as_503():
    """A store that went away after start (PostgreSQL restarting, disk full): 503 with its line."""
    try:
        yield
    except FeedbackStoreError as error:
        raise HTTPException(503, str(error)) from None


def with_feedback(app: FastAPI, predictor, store) -> FastAPI:
    """`app` (create_app's, serving `predictor`) with the feedback routes over `store`."""
    app.include_router(feedback_router(predictor, store, app.state.cpu_work))
    return app


def feedback_router(predictor, store, cpu_work: CpuQueue) -> APIRouter:
    router = APIRouter(prefix="/api/feedback", tags=["feedback"])
    model = model_summary(predictor)
    model_version = str(predictor.classifier.info.get("config", {}).get("created", ""))

    def store_drawing(data: bytes, answer, label: int, predicted: int | None) -> dict:
        with store_errors_as_503():
            drawing_id, duplicate = store.add(
                data, answer.prepared, label, answer.digit if predicted is None else predicted,
                model=model["name"], model_version=model_version, model_test_accuracy=model["test_accuracy"])
        return {"id": drawing_id, "duplicate": duplicate}

    def read_summary() -> dict:
        with store_errors_as_503():
            return store.summary(model["name"])

    @router.post("", summary="Store a drawing with its right digit", openapi_extra=_FEEDBACK_BODY,
                 responses={400: {"description": "a missing or bad field, or not a readable image"},
                            413: {"description": "body over 4 MiB"},
                            415: {"description": "not multipart/form-data"},
                            422: {"description": "no digit found in the image"}})
    async def add_feedback(request: Request):
        if media_type(request) != "multipart/form-data":
            raise HTTPException(415, "send multipart/form-data with 'file', 'label' and optionally 'predicted'")
        data, fields = await read_upload(request, fields=("label", "predicted"))
        label = digit_field(fields, "label")
        if label is None:
            raise HTTPException(400, "send the right digit as the form field 'label' (0-9)")
        predicted = digit_field(fields, "predicted")
        # Preparing is CPU work (the app's queue for the cores); storing mostly waits on the database.
        answer = await cpu_work.run(request, predictor.predict_image, data)
        return await anyio.to_thread.run_sync(store_drawing, data, answer, label, predicted)

    @router.get("/summary", summary="What was collected, and the served model's accuracy on it")
    async def summary():
        return await anyio.to_thread.run_sync(read_summary)

    return router
