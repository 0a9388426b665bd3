"""`mnistlab serve`: a local page to draw a digit and watch the model answer, and a JSON API.

    GET  /             the drawing page (package files under web/, nothing from the network)
    POST /api/predict  an image (multipart field `file`, or JSON {"image": "data:image/png;..."})
                       -> the class ("digit") and its name, the 10 probabilities, the 28x28
                       input and its saliency
    GET  /api/model    the model's name, parameters, test accuracy, dataset and class names
    GET  /docs         the API described from /openapi.json, without a CDN

Images go through the same code as `mnistlab predict` (preprocess.mnist_style). Bad input gets
a 4xx answer {"error": "..."} that the page shows; the server keeps serving. The model is
loaded once; classifying runs in worker threads, a few at a time.
"""

import base64
import binascii
import ipaddress
import json
import socket
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import MnistlabError
from mnistlab.inference import preprocess

MAX_FILE_BYTES = 10 * 1024 * 1024  # an upload larger than this is refused (413)
MAX_BODY_BYTES = MAX_FILE_BYTES * 4 // 3 + 64 * 1024  # room for base64 and multipart framing
MAX_PIXELS = 25_000_000  # pixel dimensions beyond this are refused before decoding
WORKERS = 2  # requests classified at once; more only queue for the same cores
IMAGE_TYPES = ("image/", "application/octet-stream")  # what a multipart file part may claim


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Classifier:
    """The model, loaded once, and what the page shows about it."""

    def __init__(self, checkpoint: str | Path | None = None):
        from mnistlab.data.datasets import normalization, recorded_dataset
        from mnistlab.inference.classify import checkpoint_path
        from mnistlab.models.summary import count_parameters
        from mnistlab.runs.rundir import load_model

        path = checkpoint_path(checkpoint)
        self.model, meta = load_model(path)
        self.mean, self.std = normalization(meta)
        dataset = recorded_dataset(meta)
        self.classes = dataset.classes
        accuracy = meta.get("test_acc")
        self.info = {
            "name": meta.get("model_name"),
            "parameters": count_parameters(self.model),
            "test_accuracy": round(float(accuracy), 2) if accuracy is not None else None,
            "dataset": dataset.name,
            "classes": list(dataset.classes),  # names by class, for the page's bars
            "checkpoint": path.name,
        }

    def predict(self, data: bytes) -> dict[str, Any]:
        """An image file's bytes -> class, its name, probabilities, input image and saliency."""
        from mnistlab.inference.classify import Prediction, rank
        from mnistlab.inference.saliency import gradient_x_input

        try:
            gray = preprocess.grayscale_from_bytes(data, MAX_PIXELS)
            image = preprocess.mnist_style(gray)
        except MnistlabError as e:
            raise ApiError(400, str(e)) from None
        # Ranked as `mnistlab predict` ranks: the same class and name.
        result = Prediction(file="upload")
        rank(self.model, [result], [image], self.mean, self.std, self.classes)
        label = result.prediction
        saliency = gradient_x_input(self.model, image, self.mean, self.std, label)
        return {
            "digit": label,  # the class number (the key was named when MNIST was all there was)
            "name": result.name,
            "probabilities": [round(float(p), 5) for p in result.probabilities],
            "image": np.round(image, 3).tolist(),
            "saliency": np.round(saliency, 3).tolist(),
        }


def web_files() -> Path:
    return Path(str(resources.files("mnistlab").joinpath("web", "static")))


async def read_body(request: Any) -> bytes:
    """The request body, refused with 413 as soon as it passes the limit (not after)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, too_large(int(declared)))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, too_large(size))
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(size: int) -> str:
    return (
        f"upload too large ({size / 1e6:.1f} MB or more); "
        f"the limit is {MAX_FILE_BYTES // (1024 * 1024)} MB: scale the image down"
    )


def image_from_json(body: bytes) -> bytes:
    """The image in {"image": "data:image/...;base64,..."}."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        hint = 'send {"image": "data:image/png;base64,..."}'
        raise ApiError(400, f"malformed JSON ({e}); {hint}") from None
    url = document.get("image") if isinstance(document, dict) else None
    if not isinstance(url, str):
        raise ApiError(400, 'JSON body needs an "image" field holding a data URL')
    header, comma, payload = url.partition(",")
    if not (comma and header.startswith("data:image/") and header.endswith(";base64")):
        raise ApiError(400, '"image" must be a data URL: data:image/png;base64,...')
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, '"image" data URL is not valid base64') from None
    if len(data) > MAX_FILE_BYTES:
        raise ApiError(413, too_large(len(data)))
    return data


async def image_from_form(request: Any, body: bytes) -> bytes:
    """The file in multipart field `file` (the body is already read, within the limit)."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException
    from starlette.requests import Request

    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    except MultiPartException as e:
        raise ApiError(400, f"malformed multipart upload ({e})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, 'multipart upload needs a file in the field "file"')
    kind = (upload.content_type or "").lower()
    if kind and not kind.startswith(IMAGE_TYPES):
        raise ApiError(415, f"{upload.filename}: {kind} is not an image; upload a PNG or JPEG")
    data = await upload.read()
    await form.close()
    if len(data) > MAX_FILE_BYTES:
        raise ApiError(413, too_large(len(data)))
    return data


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "example": "data:image/png;base64,iVBOR..."}
                    },
                    "required": ["image"],
                }
            },
        },
    },
    "responses": {
        "400": {"description": "not an image, empty, no digit found, malformed JSON"},
        "413": {"description": "over 10 MB"},
        "415": {"description": "not multipart/form-data or JSON, or the file is not an image"},
    },
}


def create_app(classifier: Classifier) -> Any:
    """The FastAPI application around one loaded model."""
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    app = FastAPI(
        title="mnistlab",
        description="Draw or upload an image; the model answers with its class and name.",
        docs_url=None,  # FastAPI's own pages load their scripts from a CDN
        redoc_url=None,
    )
    limiter = anyio.CapacityLimiter(WORKERS)
    files = web_files()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"invalid request: {e.errors()}"}, status_code=422)

    @app.post("/api/predict", summary="Classify one image", openapi_extra=PREDICT_BODY)
    async def predict(request: Request) -> dict[str, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("multipart/form-data", "application/json"):
            raise ApiError(415, f"content type {kind or 'none'}: send multipart/form-data or JSON")
        body = await read_body(request)
        if kind == "application/json":
            data = image_from_json(body)
        else:
            data = await image_from_form(request, body)
        return await anyio.to_thread.run_sync(partial(classifier.predict, data), limiter=limiter)

    @app.get("/api/model", summary="The model being served")
    async def model() -> dict[str, Any]:
        return classifier.info

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(files / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(files / "docs.html")

    app.mount("/static", StaticFiles(directory=files), name="static")
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Fail with a one-line error now rather than a server log line later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise MnistlabError(
                f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                "pick another --port"
            ) from None
