"""How a request to the API carries one image, shared by /api/predict (app.py) and
/api/read (read_api.py): multipart field `file`, or the image itself with an image/*
Content-Type; and how a prepared 28x28 image goes back (a PNG data URL)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .. import preprocess

# The request bodies /api/predict accepts, for the OpenAPI docs (the endpoint reads the
# request itself so that one route takes both a form upload and a raw image body).
IMAGE_BODY = {"type": "string", "format": "binary"}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": IMAGE_BODY}}},
    "image/*": {"schema": IMAGE_BODY},
}}}


def single_image_errors(no_digit: str) -> dict:
    """The error answers of a route taking one image as read_single_image reads it, for the
    OpenAPI docs; `no_digit` says when it answers 422."""
    return {400: {"description": "not a readable image, or malformed multipart"},
            413: {"description": "body over 4 MiB"},
            415: {"description": "neither multipart/form-data nor image/*"},
            422: {"description": no_digit}}


def image_data_url(prepared: np.ndarray) -> str:
    """The prepared 28x28 image as a PNG data URL the page can show."""
    return "data:image/png;base64," + base64.b64encode(preprocess.to_png(prepared)).decode("ascii")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_upload(request: Request, fields: tuple[str, ...] = ()) -> tuple[bytes, dict[str, str]]:
    """A multipart form's file field 'file' and the text `fields` that were sent."""
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "send the image as the multipart file field 'file'")
        return await upload.read(), {name: form[name] for name in fields if isinstance(form.get(name), str)}


async def read_single_image(request: Request) -> bytes:
    kind = media_type(request)
    if kind == "multipart/form-data":
        return (await read_upload(request))[0]
    if kind.startswith("image/"):
        return await request.body()
    raise HTTPException(415, f"Content-Type {kind or 'missing'}: send multipart/form-data with a "
                             "'file' field, or the image itself with an image/* Content-Type")
