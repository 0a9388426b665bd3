"""`mnistlab serve`: a local page to draw a digit and watch the model answer, and a JSON API.

    GET  /             the drawing page (package files under web/, nothing from the network)
    POST /api/predict  an image (multipart field `file`, or JSON {"image": "data:image/png;..."})
                       -> the class ("digit") and its name, the 10 probabilities, the 28x28
                       input and its saliency; with ?preview=N also the image as the server
                       read it, as a PNG at most N pixels on its longer side
    GET  /api/model    the model's name, parameters, test accuracy, dataset and class names
    GET  /docs         the API described from /openapi.json, without a CDN

Images go through the same code as `mnistlab predict` (preprocess.mnist_style); a large JPEG
is decoded at a reduced scale first (see `decode`). Bad input gets a 4xx answer
{"error": "..."} that the page shows; the server keeps serving.

Concurrency: the CPU work of a request (decoding, preprocessing, the network) runs in a small
thread pool, so the event loop keeps reading other requests meanwhile; `mnistlab serve
--workers N` runs N such processes on one port, each with the model loaded once
(`worker_app`), because the GIL keeps one process from using more than about one core.
"""

import asyncio
import base64
import binascii
import io
import ipaddress
import json
import logging
import os
import socket
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mnistlab.errors import MnistlabError
from mnistlab.inference import preprocess

MAX_FILE_BYTES = 10 * 1024 * 1024  # an upload larger than this is refused (413)
MAX_BODY_BYTES = MAX_FILE_BYTES * 4 // 3 + 64 * 1024  # room for base64 and multipart framing
MAX_PIXELS = 25_000_000  # pixel dimensions beyond this are refused before decoding
THREADS = 1  # requests classified at once per process; more only queue for the same cores
DRAFT_SIDE = 768  # a JPEG larger than this is decoded at 1/2, 1/4 or 1/8 scale, not below it
MAX_PREVIEW_SIDE = 1024  # ?preview=N is capped here
IMAGE_TYPES = ("image/", "application/octet-stream")  # what a multipart file part may claim
SETTINGS_ENV = "MNISTLAB_SERVE_SETTINGS"  # how `serve --workers` hands its options to workers
STARTUP_FAILURE = 3  # the exit status uvicorn's supervisor reads as "stop, do not restart"

log = logging.getLogger("uvicorn.error")  # the server's own log, in its format


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Classifier:
    """The model, loaded once, and what the page shows about it."""

    def __init__(self, checkpoint: str | Path | None = None):
        from mnistlab.inference.onnxfile import OnnxModel, is_onnx_file

        if is_onnx_file(checkpoint):
            # ONNX Runtime alone: neither torch nor the training code is imported.
            self.model = OnnxModel(checkpoint, threads=1)
            self.mean, self.std = self.model.mean, self.model.std
            self.classes = self.model.classes
            self.saliency = False
            self.info = {
                "name": self.model.meta.get("model"),
                "parameters": None,  # a graph's initializers are not the network's parameters
                "test_accuracy": None,
                "dataset": self.model.meta.get("dataset", "mnist"),
                "classes": list(self.classes),
                "checkpoint": Path(checkpoint).name,
                "saliency": "an ONNX file has no gradients to show which pixels drove it",
            }
            return
        from mnistlab.data.datasets import normalization, recorded_dataset
        from mnistlab.inference.classify import checkpoint_path
        from mnistlab.models.summary import count_parameters
        from mnistlab.runs.rundir import load_model

        path = checkpoint_path(checkpoint)
        self.model, meta = load_model(path)
        self.saliency = True
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
            "saliency": None,  # None: shown; else why not
        }

    def predict(self, data: bytes, preview: int = 0) -> dict[str, Any]:
        """An image file's bytes -> class, its name, probabilities, input image and saliency;
        with `preview` > 0 also the decoded image as a PNG data URL that many pixels wide."""
        from mnistlab.inference.classify import Prediction, rank

        try:
            gray = decode(data)
            image = preprocess.mnist_style(gray)
        except MnistlabError as e:
            raise ApiError(400, str(e)) from None
        # Ranked as `mnistlab predict` ranks (under inference_mode): the same class and name.
        result = Prediction(file="upload")
        rank(self.model, [result], [image], self.mean, self.std, self.classes)
        label = result.prediction
        saliency = None
        if self.saliency:
            from mnistlab.inference.saliency import gradient_x_input

            saliency = gradient_x_input(self.model, image, self.mean, self.std, label)
            saliency = np.round(saliency, 3).tolist()
        answer = {
            "digit": label,  # the class number (the key was named when MNIST was all there was)
            "name": result.name,
            "probabilities": [round(float(p), 5) for p in result.probabilities],
            "image": np.round(image, 3).tolist(),
            "saliency": saliency,  # None without torch (an ONNX file)
        }
        if preview:
            answer["preview"] = preview_png(gray, preview)
        return answer


def decode(data: bytes) -> np.ndarray:
    """An upload's bytes as gray [H, W] in [0, 1], as `mnistlab predict` reads a file, with
    two shortcuts to the same pixels or nearly:

    - a JPEG larger than DRAFT_SIDE is decoded at a reduced scale (the JPEG decoder's draft
      mode: 1/2 to 1/8, straight to gray), several times faster than decoding a phone photo
      whole; preprocessing scales photos down further anyway;
    - an RGBA image with no transparent pixel (the page's canvas) skips compositing on white,
      which would change nothing.

    Anything else, and any image these paths fail on, goes the way of `predict`, which also
    words every refusal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        jpeg = image.format == "JPEG" and max(image.size) > DRAFT_SIDE
        fast = (jpeg or image.mode == "RGBA") and image.width * image.height <= MAX_PIXELS
    except Exception:
        fast = False
    if not fast:
        return preprocess.grayscale_from_bytes(data, MAX_PIXELS)
    with image:
        try:
            if jpeg:
                scale = DRAFT_SIDE / max(image.size)
                image.draft(
                    "L", (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
                )
            image.load()
            upright = ImageOps.exif_transpose(image)
            if upright.mode == "RGBA" and upright.getextrema()[3][0] == 255:
                upright = upright.convert("L")
            return preprocess.to_grayscale(upright)
        except (OSError, ValueError, SyntaxError, EOFError):
            return preprocess.grayscale_from_bytes(data, MAX_PIXELS)


def preview_png(gray: np.ndarray, side: int) -> str:
    """The image the server read, fitted into side x side, as a PNG data URL: the page shows
    it for formats a browser cannot display (TIFF, ...)."""
    image = Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))
    image.thumbnail((side, side), Image.Resampling.BOX)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def web_files() -> Path:
    return Path(str(resources.files("mnistlab").joinpath("web", "static")))


async def read_body(request: Any) -> bytes:
    """The request body, refused with 413 as soon as it passes the limit (not after)."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, too_large(int(declared)))
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, too_large(size))
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer: one line in the log, not a traceback per connection.
        of = f" of {declared}" if declared else ""
        client = request.client.host if request.client else "a client"
        log.warning(f"{client} closed the connection after {size}{of} body bytes; not answered")
        raise ApiError(400, f"request body incomplete ({size}{of} bytes)") from None
    return b"".join(chunks)


def too_large(size: int) -> str:
    return (
        f"upload too large ({size / 1e6:.1f} MB or more); "
        f"the limit is {MAX_FILE_BYTES // (1024 * 1024)} MB: scale the image down"
    )


JSON_HINT = 'send {"image": "data:image/png;base64,..."}'


def image_from_json(body: bytes) -> bytes:
    """The image in {"image": "data:image/...;base64,..."}."""
    # An object is all that is accepted; looking first also turns away a deep array
    # ("[[[[...") before the parser recurses into it.
    if not body.lstrip()[:1] == b"{":
        raise ApiError(400, f"malformed JSON: the body must be an object; {JSON_HINT}")
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"malformed JSON ({e}); {JSON_HINT}") from None
    except RecursionError:
        raise ApiError(400, f"malformed JSON: nested too deeply; {JSON_HINT}") from None
    url = document.get("image")
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


def preview_side(request: Any) -> int:
    """?preview=N: the longer side of the preview asked for (0: none)."""
    value = request.query_params.get("preview", "0")
    if not value.isdigit():
        raise ApiError(400, f"?preview={value}: give the preview's size in pixels, e.g. 280")
    return min(int(value), MAX_PREVIEW_SIDE)


PREDICT_BODY = {
    "parameters": [
        {
            "name": "preview",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "default": 0, "maximum": MAX_PREVIEW_SIDE},
            "description": "also answer the image as read, a PNG data URL this many pixels "
            "on its longer side",
        }
    ],
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
        "200": {"description": "digit, name, probabilities, image, saliency (and preview)"},
        "400": {"description": "not an image, empty, no digit found, malformed JSON"},
        "413": {"description": "over 10 MB"},
        "415": {"description": "not multipart/form-data or JSON, or the file is not an image"},
    },
}


def create_app(classifier: Classifier, *, threads: int = THREADS, delay: float = 0.0) -> Any:
    """The FastAPI application around one loaded model. `threads`: requests classified at
    once; `delay`: seconds each /api/predict answer is held back, a slow server for the
    page's tests (app.state.delay, read per request, so a test can change it)."""
    import anyio
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    app = FastAPI(
        title="mnistlab",
        description="Draw or upload an image; the model answers with its class and name.",
        docs_url=None,  # FastAPI's own pages load their scripts from a CDN
        redoc_url=None,
    )
    app.state.delay = delay
    limiter = anyio.CapacityLimiter(threads)
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

    def answer(data: bytes, preview: int) -> bytes:
        # Encoded here, in the worker thread, rather than by FastAPI's jsonable_encoder in
        # the event loop, which walks the 1,600 floats several times slower than json.dumps
        # and takes longer than the network itself.
        return json.dumps(classifier.predict(data, preview), separators=(",", ":")).encode()

    @app.post("/api/predict", summary="Classify one image", openapi_extra=PREDICT_BODY)
    async def predict(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("multipart/form-data", "application/json"):
            raise ApiError(415, f"content type {kind or 'none'}: send multipart/form-data or JSON")
        preview = preview_side(request)
        body = await read_body(request)
        if kind == "application/json":
            data = image_from_json(body)
        else:
            data = await image_from_form(request, body)
        if app.state.delay:
            await asyncio.sleep(app.state.delay)
        content = await anyio.to_thread.run_sync(answer, data, preview, limiter=limiter)
        return Response(content, media_type="application/json")

    @app.get("/api/model", summary="The model being served")
    async def model() -> dict[str, Any]:
        return classifier.info

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(files / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(files / "docs.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        # Asked for by browsers and tools that do not read the page's <link rel="icon">.
        return FileResponse(files / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=files), name="static")
    return app


def one_torch_thread() -> None:
    """One intra-op thread per request being classified: the network is far too small to
    gain from splitting one image across cores, and concurrent requests already fill them.
    (Nothing to set where torch is absent: an ONNX file's session has one thread.)"""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def worker_app() -> Any:
    """The application of one `serve --workers` process, from the settings `serve` put in
    the environment; a model that fails to load is written to the settings' `failure` file
    for `serve` to report, and the worker exits as one that failed to start."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    one_torch_thread()
    try:
        classifier = Classifier(settings["checkpoint"])
    except MnistlabError as e:
        Path(settings["failure"]).write_text(str(e))
        os._exit(STARTUP_FAILURE)
    return create_app(classifier, threads=settings["threads"])


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
