"""POST /api/read: the number in one image (several digits, several lines), for the page's
"number" mode and for clients. The body is as for /api/predict: multipart field `file`, or
the image itself with an image/* Content-Type.

    {"text": "12\\n345", "unsure": false, "digits": [{"digit", "confidence", "alternatives",
     "unsure", "box": [x0, y0, x1, y1], "image": "<the 28x28 the model saw, PNG data URL>"}, ...]}

Errors as for /api/predict: 400 unreadable, 413 too big, 415 wrong Content-Type, and 422 for
a readable image with no digits ("no digits found ...") or far more marks than a number has.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..read import read_number
from .bodies import PREDICT_BODY, image_data_url, read_single_image, single_image_errors
from .limits import CpuQueue


def read_json(predictor, data: bytes) -> dict:
    """Image bytes -> the answer JSON (a bad image raises InputImageError, which the app
    answers 400 or 422)."""
    result = read_number(data, predictor)
    answer = result.record()
    for record, digit in zip(answer["digits"], result.digits):
        record["image"] = image_data_url(digit.prepared)
    return answer


def read_router(predictor, cpu_work: CpuQueue) -> APIRouter:
    """The /api/read route over `predictor`, sharing the app's queue for CPU-bound work."""
    router = APIRouter()

    @router.post("/api/read", summary="Read the number in one image: its digits, boxes and confidences",
                 openapi_extra=PREDICT_BODY,
                 responses=single_image_errors("no digits found, or far more marks than a number"))
    async def read(request: Request):
        data = await read_single_image(request)
        return JSONResponse(await cpu_work.run(request, read_json, predictor, data))

    return router
