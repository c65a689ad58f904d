"""The HTTP service: a drawing page, a JSON API and Prometheus metrics over one Classifier.

The app parses requests, enforces limits, calls the classifier and formats answers; reading
pictures and running the model belong to the classifier. Model calls never run on the event
loop: pictures are prepared in a thread pool, and concurrent requests share forward passes
through a micro-batcher.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import orjson
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import BaseModel, Field
from python_multipart.multipart import parse_options_header
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import DigitsError
from ..inference import as_digits, number_reading
from ..mnist import FIELD
from ..prepare import prepare_counted, segment_number

if TYPE_CHECKING:
    from ..inference import Classifier

STATIC = Path(__file__).parent / "static"
MAX_BODY = 10 * 1024 * 1024  # bytes in one request body
BODY_SECONDS = 30.0  # a request body must have arrived whole this long after the request began
MAX_IMAGES = 64  # pictures in one /predict/batch request
MAX_BATCH = 64  # images in one forward pass of the micro-batcher
DECODERS = 4  # pictures read at once: a flood of large photos queues instead of filling memory
SETTINGS_VARIABLE = "DIGITS_SERVE"  # how `serve` hands its settings to worker processes

disable_created_metrics()  # the *_created series only double what /metrics prints

JSON_BODY = {"type": "object", "description": "one of the two keys", "properties": {
    "pixels": {"type": "array", "description": "28 rows of 28 numbers, 0–255, white digit on black",
               "items": {"type": "array", "items": {"type": "number"}, "minItems": 28, "maxItems": 28},
               "minItems": 28, "maxItems": 28},
    "image": {"type": "string", "description": "a PNG, JPEG, GIF, BMP, TIFF or WebP picture, base64"
                                               " (a data: URL works too)"}}}
PICTURE = {"schema": {"type": "string", "format": "binary"}}
PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": JSON_BODY},
    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": PICTURE["schema"]}}},
    "image/png": PICTURE, "image/jpeg": PICTURE, "image/*": PICTURE, "application/octet-stream": PICTURE}}}
BATCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": JSON_BODY, "maxItems": MAX_IMAGES}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "images": {"type": "array", "items": PICTURE["schema"], "maxItems": MAX_IMAGES}}}}}}}


class Problem(BaseModel):
    detail: str = Field(description="what was wrong, and what to do")


class Reading(BaseModel):
    digit: int
    class_: str = Field(alias="class", description='the class\'s name: "7", or "Sneaker" for a Fashion-MNIST model')
    probabilities: list[float] = Field(description="ten probabilities, for digits 0–9")
    input: list[list[int]] = Field(description="the 28×28 image the model saw, 0–255, white on black")


class Prediction(Reading):
    model: str
    looks_like_digits: int | None = Field(None, description="only for a picture whose ink looks like several "
                                          "digits: how many (read it as a number with ?number=true)")


class Batch(BaseModel):
    predictions: list[Reading]
    model: str


class Number(BaseModel):
    number: str = Field(examples=["2026"])
    confidence: float = Field(description="the product of the digits' confidences")
    digits: list[int]
    confidences: list[float]
    probabilities: list[list[float]]
    inputs: list[list[list[int]]] = Field(description="the 28×28 image the model saw of each digit")
    model: str


PROBLEMS = {status: {"model": Problem} for status in (400, 408, 413, 415, 422)}
# digits_errors_total's kinds, named here rather than from http.HTTPStatus, whose phrases
# change between Python versions (413 and 422 did in 3.13) and would rename the series.
ERROR_KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
               413: "content_too_large", 415: "unsupported_media_type", 422: "unprocessable_content",
               499: "client_closed_request", 500: "internal_server_error", 503: "service_unavailable"}
CLIENT_CLOSED = 499  # as nginx logs it: the client hung up before the answer; no fault of ours


class Metrics:
    """Prometheus metrics of one app: requests, latency, errors by kind, forward-pass sizes.

    With several worker processes (PROMETHEUS_MULTIPROC_DIR set), every worker writes its
    counts to that folder and /metrics adds them all up.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("digits_requests", "HTTP requests answered",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("digits_request_duration_seconds", "Time to answer a request",
                                 ["endpoint"], registry=self.registry,
                                 buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        self.errors = Counter("digits_errors", "Requests answered with an error, by kind",
                              ["kind"], registry=self.registry)
        self.batch_size = Histogram("digits_forward_batch_size", "Images per forward pass of the model",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(ERROR_KINDS.get(status, f"http_{status}")).inc()

    def exposition(self) -> bytes:
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MeasureRequests:
    """ASGI middleware: counts and times every HTTP request by route and status."""

    def __init__(self, app: Callable, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")  # the path template, so that the label set stays small
            self.metrics.observe(route.path if route else "other", status, time.perf_counter() - start)


class LimitBody:
    """ASGI middleware: refuses a request body over max_bytes, declared or streamed, with 413,
    and one that has not arrived whole within max_seconds with 408 — a client that trickles
    its body in would otherwise hold its connection and its buffers for as long as it likes.

    (Starlette's own limit answers a declared oversize body in plain text, unlike every other
    error of this API.)
    """

    def __init__(self, app: Callable, max_bytes: int, max_seconds: float) -> None:
        self.app, self.max_bytes, self.max_seconds = app, max_bytes, max_seconds

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = int(dict(scope["headers"]).get(b"content-length", 0))
        received, complete = 0, False
        deadline = asyncio.get_running_loop().time() + self.max_seconds
        too_large = HTTPException(413, f"the request body is over the {self.max_bytes:,}-byte limit"
                                       " — send a smaller picture")

        async def receive_within_limits() -> dict:
            nonlocal received, complete
            if declared > self.max_bytes:
                raise too_large
            if complete:  # after the body, only a disconnect can come: no deadline for it
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.max_seconds:g} s"
                                         " — send it all at once") from None
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > self.max_bytes:
                raise too_large
            return message

        await self.app(scope, receive_within_limits, send)


class MicroBatcher:
    """Runs the model on whatever images are waiting, all in one forward pass.

    While one pass runs in the model thread, new requests queue up; the next pass takes them
    all (up to max_batch images). One pass costs far less than one per request, and the event
    loop never waits on the model.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int, metrics: Metrics) -> None:
        self.predict, self.max_batch, self.metrics = predict, max_batch, metrics
        self.waiting: list[tuple[np.ndarray, asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="model")

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) for prepared images (N, 28, 28) uint8."""
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        self.waiting.append((images, result))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        return await result

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            take, count = 0, 0
            while take < len(self.waiting) and (take == 0 or count + len(self.waiting[take][0]) <= self.max_batch):
                count += len(self.waiting[take][0])
                take += 1
            group, self.waiting = self.waiting[:take], self.waiting[take:]
            try:
                batch = np.concatenate([images for images, _ in group])
                self.metrics.batch_size.observe(len(batch))
                probabilities = await loop.run_in_executor(self.thread, self.predict, batch)
            except Exception as e:  # the model failed: each waiting request gets the error
                for _, result in group:
                    if not result.done():
                        result.set_exception(e)
                continue
            start = 0
            for images, result in group:
                if not result.done():  # a client that hung up has cancelled its future
                    result.set_result(probabilities[start:start + len(images)])
                start += len(images)

    def close(self) -> None:
        self.thread.shutdown(wait=False, cancel_futures=True)


# --- reading requests -------------------------------------------------------------------

def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def form_is_whole(content_type: str, body: bytes) -> bool:
    """Whether a multipart body reaches its closing delimiter: the form parser silently drops
    a part that was cut off, which would answer for fewer pictures than were sent."""
    boundary = parse_options_header(content_type)[1][b"boundary"]
    return b"--" + boundary + b"--" in body


def grid_problem(pixels: Any) -> str | None:
    """What keeps ``pixels`` from being 28 lists of 28 items, if anything.

    Checked on the lists, before any conversion, so a huge array costs nothing to refuse.
    """
    if not isinstance(pixels, list):
        return json_kind(pixels)
    if len(pixels) != FIELD:
        return f"{len(pixels)} row{'s' * (len(pixels) != 1)}"
    for row in pixels:
        if not isinstance(row, list):
            return f"a row that is not a list but {json_kind(row)}"
        if len(row) != FIELD:
            return f"a row of {len(row)}"
    return None


def json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words (a client need not know Python's)."""
    kinds = {type(None): "null", bool: "true or false", int: "a number", float: "a number", str: "a string",
             dict: "an object", list: "a list"}
    return kinds.get(type(value), type(value).__name__)


def pixels_array(pixels: Any) -> np.ndarray:
    """A 28×28 grid of numbers 0–255 (or 0–1), as the uint8 image the model takes: the same
    array reads the same here and through the Python API."""
    problem = grid_problem(pixels)
    if problem:
        raise HTTPException(422, f'"pixels" must be 28 rows of 28 numbers, got {problem}')
    # JSON numbers only: NumPy would also take "200" and true, and a list one level deeper fails
    if any(type(value) not in (int, float) for row in pixels for value in row):
        raise HTTPException(422, '"pixels" must hold numbers only')
    grid = np.asarray(pixels, dtype=np.float32)
    if not (np.isfinite(grid).all() and grid.min() >= 0 and grid.max() <= 255):
        raise HTTPException(422, '"pixels" must be numbers from 0 to 255 (white digit on black, as in MNIST)')
    return as_digits(grid[None])[0]


def base64_picture(text: Any) -> bytes:
    if not isinstance(text, str):
        raise HTTPException(422, '"image" must be a string: the picture\'s bytes in base64')
    if text.startswith("data:"):  # a data URL, as canvas.toDataURL() makes
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, '"image" is not valid base64 — encode the picture\'s bytes with'
                                 ' standard base64') from None


def json_item(item: Any) -> bytes | np.ndarray:
    if not isinstance(item, dict) or len(item.keys() & {"pixels", "image"}) != 1:
        raise HTTPException(422, 'expected a JSON object with one of "pixels" (28 rows of 28 numbers'
                                 ' 0–255) or "image" (a picture in base64)')
    return pixels_array(item["pixels"]) if "pixels" in item else base64_picture(item["image"])


def too_many(count: int | str, many: bool) -> HTTPException:
    """A batch over the limit is too large (413); /predict takes one picture (422)."""
    return HTTPException(413 if many else 422, f"{count} pictures in one request; "
                         + (f"at most {MAX_IMAGES}" if many else "send one, or use /predict/batch"))


async def read_pictures(request: Request, many: bool) -> list[bytes | np.ndarray]:
    """What a request asks about: picture bytes to prepare, or 28×28 arrays ready for the model."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        body = await request.body()  # kept, so that the form can be checked for a cut-off end
        try:
            async with request.form(max_files=MAX_IMAGES + 1, max_fields=MAX_IMAGES + 1) as form:
                files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
                pictures = [await file.read() for file in files]
        except StarletteHTTPException as e:  # Starlette stops reading at max_files with a 400 of its own
            if "too many files" not in str(e.detail).lower():
                raise
            raise too_many(f"over {MAX_IMAGES}", many) from None
        if not form_is_whole(request.headers["content-type"], body):
            raise HTTPException(400, "the multipart form is cut off before its closing boundary — send the whole form")
        if not pictures:
            raise HTTPException(422, "the form holds no file — send the picture as a file field named image")
    elif kind == "application/json" or kind.endswith("+json"):
        body = await request.body()
        if not body:
            raise HTTPException(400, "the request body is empty — send JSON, or a picture")
        try:
            content = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise HTTPException(400, f"the body is not valid JSON ({e})") from None
        if many:
            if not isinstance(content, dict) or not isinstance(content.get("images"), list):
                raise HTTPException(422, 'expected a JSON object {"images": [...]}, each item'
                                         ' {"pixels": ...} or {"image": ...}')
            content = content["images"]
            if not content:
                raise HTTPException(422, '"images" is empty — send at least one')
            if len(content) > MAX_IMAGES:  # before decoding any of them
                raise too_many(len(content), many)
        items, pictures = content if many else [content], []
        for number, item in enumerate(items, 1):
            try:
                pictures.append(json_item(item))
            except HTTPException as e:
                if not many:
                    raise
                raise HTTPException(e.status_code, f"picture {number} of {len(items)}: {e.detail}") from None
    elif kind.startswith("image/") or kind == "application/octet-stream":
        if many:
            raise HTTPException(415, f"a batch is JSON {{\"images\": [...]}} or a multipart form, not {kind} — "
                                     "send one picture to /predict")
        pictures = [await request.body()]
    else:
        raise HTTPException(415, f"unsupported Content-Type {kind or '(none)'!r} — send application/json,"
                                 " multipart/form-data, or a picture (image/png, image/jpeg, …)")
    empty = next((number for number, p in enumerate(pictures, 1) if isinstance(p, bytes) and not p), None)
    if empty:
        where = f"picture {empty} of {len(pictures)}: " if len(pictures) > 1 else ""
        raise HTTPException(400, f"{where}the picture is empty (0 bytes) — send the picture's bytes")
    if len(pictures) > (MAX_IMAGES if many else 1):
        raise too_many(len(pictures), many)
    return pictures


def orjson_response(content: Any) -> Response:
    """A JSON response built straight from NumPy arrays (the hot path skips pydantic)."""
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


# --- the app ----------------------------------------------------------------------------

def create_app(classifier: Classifier, max_batch: int = MAX_BATCH, max_body: int = MAX_BODY,
               body_seconds: float = BODY_SECONDS) -> FastAPI:
    """The service over a loaded digits Classifier (see digits.load)."""
    metrics = Metrics()
    batcher = MicroBatcher(classifier.predict_prepared, max_batch, metrics)
    name, classes = classifier.info["name"], classifier.info["classes"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # the first forward pass is slow (lazy initialisation): pay it before the first visitor
        await to_thread.run_sync(classifier.predict_prepared, np.zeros((1, FIELD, FIELD), np.uint8))
        yield
        batcher.close()

    app = FastAPIOffline(title="digits", redoc_url=None, lifespan=lifespan,
                         description="Reads handwritten digits. The drawing page is at `/`.")
    app.add_middleware(LimitBody, max_bytes=max_body, max_seconds=body_seconds)
    app.add_middleware(MeasureRequests, metrics=metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(DigitsError)
    async def unreadable(request: Request, error: DigitsError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def hung_up(request: Request, error: ClientDisconnect) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # for the metrics: nobody is left to read it

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"detail": problems}, status_code=422)

    decoders = CapacityLimiter(DECODERS)

    async def prepare(pictures: list[bytes | np.ndarray]) -> np.ndarray:
        """The (N, 28, 28) images the model takes; pictures are read off the event loop."""
        def prepare_all() -> list[np.ndarray]:
            prepared = []
            for number, picture in enumerate(pictures, 1):
                try:
                    prepared.append(picture if isinstance(picture, np.ndarray) else classifier.prepare(picture))
                except DigitsError as e:
                    if len(pictures) == 1:
                        raise
                    raise DigitsError(f"picture {number} of {len(pictures)}: {e}") from None
            return prepared

        if all(isinstance(p, np.ndarray) for p in pictures):
            return np.stack(pictures)
        return np.stack(await to_thread.run_sync(prepare_all, limiter=decoders))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:"})

    @app.post("/predict", response_model=Prediction | Number, responses=PROBLEMS, openapi_extra=PREDICT_BODY)
    async def predict(request: Request, number: bool = Query(False, description="read a multi-digit number")):
        """Read one digit — or, with `?number=true`, a number — from a picture or a 28×28 grid.

        Send a picture as the raw body (`image/png`, `image/jpeg`, …), as a multipart file, or
        as JSON `{"image": "<base64>"}`; or send JSON `{"pixels": [[…28 numbers…] × 28]}`
        (0–255, white digit on black, as in MNIST), which is not prepared again (a grid drawn
        dark on light is inverted). A picture whose ink looks like several digits says how many
        in `looks_like_digits`.
        """
        (picture,) = await read_pictures(request, many=False)
        if number:  # cut apart off the event loop; read in the model's thread, batched like any digits
            pieces = await to_thread.run_sync(segment_number, picture,
                                              '"pixels"' if isinstance(picture, np.ndarray) else None,
                                              limiter=decoders)
            probabilities = await batcher(np.stack(pieces))
            reading = number_reading(pieces, probabilities)
            # float32 as the model gives them, and as /predict sends them: not float64's long spellings
            return orjson_response({**{k: v for k, v in reading.items() if k != "images"},
                                    "confidences": probabilities.max(1), "probabilities": probabilities,
                                    "inputs": reading["images"], "model": name})
        if isinstance(picture, np.ndarray):  # a pixels grid: one digit, as it is
            images, several = picture[None], 1
        else:  # read off the event loop, with how many digits it looks like
            digit_image, several = await to_thread.run_sync(prepare_counted, picture, limiter=decoders)
            images = digit_image[None]
        probabilities = await batcher(images)
        digit = int(probabilities[0].argmax())
        hint = {"looks_like_digits": several} if several > 1 else {}
        return orjson_response({"digit": digit, "class": classes[digit], "probabilities": probabilities[0],
                                "model": name, "input": images[0], **hint})

    @app.post("/predict/batch", response_model=Batch, responses=PROBLEMS, openapi_extra=BATCH_BODY)
    async def predict_batch(request: Request):
        """Read up to 64 digits in one request: JSON `{"images": [{"pixels": …} or {"image": …}, …]}`,
        or a multipart form with one file per picture. Predictions come in the order sent."""
        images = await prepare(await read_pictures(request, many=True))
        probabilities = await batcher(images)
        return orjson_response({"model": name, "predictions": [
            {"digit": int(p.argmax()), "class": classes[int(p.argmax())], "probabilities": p, "input": image}
            for p, image in zip(probabilities, images, strict=True)]})

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness: answers while the service runs."""
        return {"status": "ok"}

    @app.get("/model")
    async def model() -> dict:
        """The model being served: name, parameters, test accuracy, when it was trained."""
        return jsonable_encoder(classifier.info)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def prometheus() -> Response:
        """Requests, latency histogram, errors by kind and forward-pass sizes, for Prometheus."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    for route in list(app.routes):  # HEAD wherever GET, as HTTP asks (uptime checks use it); not in the schema
        if isinstance(route, APIRoute) and route.methods == {"GET"}:
            app.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False)
    return app


def app_from_environment() -> FastAPI:
    """The app of one worker process, made from the settings `serve` left in the environment."""
    from ..inference import load

    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    return create_app(load(settings["model"], settings["backend"]), settings["max_batch"])


def serve(model: str | Path | None = None, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, backend: str = "auto", max_batch: int = MAX_BATCH) -> None:
    """Load a model and serve it with uvicorn until interrupted."""
    import uvicorn

    from ..inference import load

    if workers < 1 or max_batch < 1:
        raise DigitsError("--workers and --max-batch must be at least 1")
    most = 2 * (os.cpu_count() or 1) + 1  # the usual ceiling: more processes only compete for the cores
    if workers > most:
        raise DigitsError(f"--workers {workers}: this machine's {os.cpu_count()} cores serve at most {most}")
    if not 0 < port < 65536:
        raise DigitsError(f"--port {port}: choose a port from 1 to 65535")
    classifier = load(model, backend)  # a bad model fails here, before anything listens
    ipv6 = ":" in host  # as uvicorn tells them apart
    address = f"[{host}]:{port}" if ipv6 else f"{host}:{port}"
    try:  # uvicorn would log the same failure and exit; say it in one line instead
        with socket.create_server((host, port), family=socket.AF_INET6 if ipv6 else socket.AF_INET):
            pass
    except OSError as e:
        raise DigitsError(f"cannot listen on {address} ({e.strerror or e}) — is another server"
                          " running there? choose another --port or --host") from None
    info = classifier.info
    print(f"Serving {info['name']} ({info['backend']}, {info['source']}) on http://{address}/"
          f" — the API is described at http://{address}/docs", flush=True)
    options = dict(host=host, port=port, log_level="warning", access_log=False)
    if workers == 1:
        uvicorn.run(create_app(classifier, max_batch), **options)
        return
    del classifier  # each worker loads its own: the supervisor holds no copy of the weights
    with tempfile.TemporaryDirectory(prefix="digits-metrics-") as metrics_dir:
        os.environ[SETTINGS_VARIABLE] = json.dumps(
            {"model": str(info["source"]), "backend": info["backend"], "max_batch": max_batch})
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)
