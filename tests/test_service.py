"""The HTTP service on a real uvicorn server on 127.0.0.1: every endpoint, every limit, and a
catalogue of malformed requests, each answered with a 4xx and a message, after which the
service still answers /healthz."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Iterator

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from digits.inference import Classifier, load
from digits.service import create_app
from digits.service.app import MAX_BODY, MAX_IMAGES, Metrics, MicroBatcher
from pictures import ink_on_paper, number_picture


@contextmanager
def running(app) -> Iterator[str]:
    """A real uvicorn server for the app, on a free port of 127.0.0.1, in a thread."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def classifier(learned) -> Classifier:
    return load(learned.checkpoint)


@pytest.fixture(scope="module")
def url(classifier) -> Iterator[str]:
    with running(create_app(classifier)) as base:
        yield base


@pytest.fixture
def client(url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


def png(image: Image.Image | np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def seven(mnist) -> np.ndarray:
    """The first test digit, a 7, as the model takes it."""
    assert mnist.test.labels[0] == 7
    return mnist.test.images[0].numpy()


@pytest.fixture(scope="module")
def seven_png(seven) -> bytes:
    """The 7 as a scan would show it: dark ink on white paper, 280×280."""
    return png(ink_on_paper(seven))


def bomb() -> bytes:
    """A 20 KB PNG that decodes to 8000×8000 pixels (64 megapixels): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side = 8000
    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte, then one grey byte per pixel
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def still_healthy(client: httpx.Client) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


# --- what works ---------------------------------------------------------------------------

def test_health_and_model(client, learned):
    still_healthy(client)
    info = client.get("/model").json()
    assert info["name"] == "seed" and info["parameters"] == 65194 and info["backend"] == "torch"
    assert info["accuracy"] == pytest.approx(learned.accuracy)
    assert info["trained"] and info["source"] == str(learned.checkpoint)


def test_predict_pixels_reads_the_grid_as_the_python_api_does(client, classifier, mnist):
    for i in range(5):
        digit = mnist.test.images[i].numpy()
        answer = client.post("/predict", json={"pixels": digit.tolist()})
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        expected = classifier.predict_prepared(digit[None])[0]
        assert reply["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
        assert reply["digit"] == int(expected.argmax()) and reply["model"] == "seed"
        assert np.array_equal(reply["input"], digit)
    # floats are rounded to the nearest grey level
    digit = mnist.test.images[0].numpy()
    answer = client.post("/predict", json={"pixels": np.clip(digit - 0.3, 0, 255).tolist()})
    assert answer.status_code == 200 and np.array_equal(answer.json()["input"], digit)
    # a digit in 0–1 (as Keras tutorials scale MNIST) reads as the Python API reads it
    unit = (digit / 255).tolist()
    answer = client.post("/predict", json={"pixels": unit})
    assert answer.status_code == 200 and np.array_equal(answer.json()["input"], digit)
    assert answer.json()["probabilities"] == pytest.approx(classifier.predict_prepared(np.array([unit]))[0].tolist(),
                                                          abs=1e-6)
    # dark ink on light, as a scan gives it, is inverted, as the Python API inverts it
    answer = client.post("/predict", json={"pixels": (255 - digit).tolist()})
    assert answer.status_code == 200 and np.array_equal(answer.json()["input"], digit)


def test_a_picture_reads_the_same_every_way_it_is_sent(client, classifier, seven_png):
    expected = classifier.predict_proba([seven_png])[0]
    encoded = base64.b64encode(seven_png).decode()
    answers = [
        client.post("/predict", content=seven_png, headers={"Content-Type": "image/png"}),
        client.post("/predict", content=seven_png, headers={"Content-Type": "application/octet-stream"}),
        client.post("/predict", files={"image": ("seven.png", seven_png, "image/png")}),
        client.post("/predict", json={"image": encoded}),
        client.post("/predict", json={"image": "data:image/png;base64," + encoded}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        assert reply["digit"] == 7 == int(expected.argmax())
        assert reply["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
        assert np.array_equal(reply["input"], classifier.prepare(seven_png))


def test_jpeg_photo(client, classifier, seven):
    buffer = io.BytesIO()
    ink_on_paper(seven, seed=3).save(buffer, "JPEG", quality=80)
    answer = client.post("/predict", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200
    assert answer.json()["digit"] == int(classifier.predict([buffer.getvalue()])[0])


def metric(exposition: str, sample: str) -> float:
    """One sample's value in a /metrics page."""
    match = re.search(rf"^{re.escape(sample)} (\S+)$", exposition, re.M)
    assert match, f"{sample} is not in /metrics"
    return float(match.group(1))


def test_read_a_number(client, classifier, mnist):
    labels = mnist.test.labels.numpy()
    picks = [int(np.flatnonzero(labels == d)[0]) for d in (2, 0, 2, 6)]
    picture = png(number_picture([mnist.test.images[i].numpy() for i in picks]))
    forwarded = metric(client.get("/metrics").text, "digits_forward_batch_size_sum")
    answer = client.post("/predict?number=true", content=picture, headers={"Content-Type": "image/png"})
    # The number's four digits went through the model's own thread, as any digits do.
    assert metric(client.get("/metrics").text, "digits_forward_batch_size_sum") == forwarded + 4
    assert answer.status_code == 200, answer.text
    reply, expected = answer.json(), classifier.read_number(picture)
    assert reply["number"] == expected["number"] and len(reply["number"]) == 4
    assert reply["digits"] == expected["digits"] and reply["model"] == "seed"
    assert reply["confidences"] == pytest.approx(expected["confidences"], abs=1e-6)
    assert reply["confidence"] == pytest.approx(np.prod(reply["confidences"]), abs=1e-6)
    assert [np.asarray(x).shape for x in reply["inputs"]] == [(28, 28)] * 4
    # Figures spelt as the model's float32, as /predict spells them, not as float64 ("0.9999984502792358")
    figures = reply["confidences"] + [p for row in reply["probabilities"] for p in row]
    assert all(str(np.float32(p)) == str(p) for p in figures)


def test_a_picture_that_looks_like_a_number_says_how_many_digits(client, mnist):
    number = png(number_picture([mnist.test.images[i].numpy() for i in range(4)]))
    single = png(ink_on_paper(mnist.test.images[0].numpy()))
    for body, expected in ((number, {"looks_like_digits": 4}), (single, {})):
        reply = client.post("/predict", content=body, headers={"Content-Type": "image/png"}).json()
        assert {k: v for k, v in reply.items() if k == "looks_like_digits"} == expected
    assert "looks_like_digits" not in client.post("/predict/batch", files=[("files", ("n.png", number))]).json()[
        "predictions"][0]


def test_a_blank_grid_read_as_a_number_is_named_by_its_field(client):
    answer = client.post("/predict?number=true", json={"pixels": [[0] * 28] * 28})
    assert answer.status_code == 422
    assert answer.json()["detail"] == '"pixels": no ink found — the picture looks blank'


def test_batch(client, classifier, mnist, seven_png):
    digits = mnist.test.images[:20].numpy()
    items = [{"pixels": d.tolist()} for d in digits] + [{"image": base64.b64encode(seven_png).decode()}]
    answer = client.post("/predict/batch", json={"images": items})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    expected = classifier.predict_prepared(np.concatenate([digits, classifier.prepare(seven_png)[None]]))
    assert [p["digit"] for p in predictions] == expected.argmax(1).tolist()
    assert [p["class"] for p in predictions] == [str(d) for d in expected.argmax(1)]  # the class's name
    assert np.allclose([p["probabilities"] for p in predictions], expected, atol=1e-6)

    files = [("images", (f"{i}.png", png(ink_on_paper(d, seed=i)), "image/png")) for i, d in enumerate(digits[:3])]
    answer = client.post("/predict/batch", files=files)
    assert answer.status_code == 200, answer.text
    assert [p["digit"] for p in answer.json()["predictions"]] == classifier.predict(
        [f[1][1] for f in files]).tolist()


def test_concurrent_requests_all_get_their_own_answer(url, classifier, mnist):
    digits = mnist.test.images[:48].numpy()
    expected = classifier.predict_prepared(digits).argmax(1).tolist()

    async def ask_all() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30,
                                     limits=httpx.Limits(max_connections=48)) as c:
            answers = await asyncio.gather(*(c.post("/predict", json={"pixels": d.tolist()}) for d in digits))
        return [a.json()["digit"] for a in answers]

    assert asyncio.run(ask_all()) == expected


def test_micro_batcher_gathers_waiting_requests_into_one_pass(classifier, mnist):
    digits = mnist.test.images[:10].numpy()
    expected = classifier.predict_prepared(digits)

    async def ask(max_batch: int) -> tuple[list[np.ndarray], Metrics]:
        metrics = Metrics()
        batcher = MicroBatcher(classifier.predict_prepared, max_batch, metrics)
        try:
            return await asyncio.gather(*(batcher(d[None]) for d in digits)), metrics
        finally:
            batcher.close()

    for max_batch, passes in ((64, 1), (4, 3), (1, 10)):
        results, metrics = asyncio.run(ask(max_batch))
        # Within rounding (bf16 on a GPU rounds differently in passes of different sizes); a row
        # handed to the wrong request would be off by far more.
        assert np.abs(np.concatenate(results) - expected).max() < 0.01
        assert metrics.registry.get_sample_value("digits_forward_batch_size_count") == passes
        assert metrics.registry.get_sample_value("digits_forward_batch_size_sum") == 10


def test_metrics(client, seven_png):
    client.post("/predict", content=seven_png, headers={"Content-Type": "image/png"})
    client.post("/predict", content=b"hello", headers={"Content-Type": "text/plain"})
    client.post("/predict", json={"pixels": [[1, 2], [3, 4]]})  # not 28×28
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    text = answer.text

    def value(sample: str) -> float:
        return metric(text, sample)

    assert value('digits_requests_total{endpoint="/predict",status="200"}') >= 1
    assert value('digits_requests_total{endpoint="/predict",status="415"}') >= 1
    assert value('digits_errors_total{kind="unsupported_media_type"}') >= 1
    assert value('digits_errors_total{kind="unprocessable_content"}') >= 1  # the same on every Python
    assert value('digits_request_duration_seconds_count{endpoint="/predict"}') >= 2
    assert value('digits_request_duration_seconds_bucket{endpoint="/predict",le="+Inf"}') >= 2
    assert value("digits_forward_batch_size_count") >= 1
    assert "_created" not in text


def test_a_client_that_hangs_up_is_not_counted_as_a_server_error(client, url):
    host, port = url.removeprefix("http://").split(":")
    for kind in ("image/png", "application/json", "multipart/form-data; boundary=x"):
        with socket.create_connection((host, int(port))) as hanging:
            hanging.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
                            "Content-Length: 1000\r\n\r\n0123456789".encode())
            time.sleep(0.2)
    counted, deadline = 'digits_errors_total{kind="client_closed_request"} 3.0', time.monotonic() + 10
    while counted not in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the hang-ups were not counted"
        time.sleep(0.1)
    assert 'kind="internal_server_error"' not in client.get("/metrics").text


def test_every_page_answers_head_as_get(client):
    for path in ("/", "/healthz", "/model", "/metrics"):
        answer = client.head(path)
        assert answer.status_code == 200 and answer.content == b"", path


def test_page_docs_and_schema(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and ">Clear</button>" in page.text and 'type="file"' in page.text
    for asset, kind in (("/static/app.js", "javascript"), ("/static/style.css", "text/css")):
        answer = client.get(asset)
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
    assert "http" not in re.sub(r"https?://www\.w3\.org\S*", "", page.text)  # nothing from elsewhere
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert not re.search(r"(src|href)=\"https?://", docs.text)  # the docs work offline too
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/predict/batch", "/healthz", "/model", "/metrics"} <= set(schema["paths"])
    content = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg"} <= set(content)


# --- limits and malformed requests --------------------------------------------------------

TRUNCATED, BOMB = "truncated", "bomb"  # made from fixtures when the test runs
JSON = {"Content-Type": "application/json"}
PIXELS = np.zeros((28, 28), int).tolist()


def as_json(content) -> bytes:
    return json.dumps(content).encode()


MALFORMED = [
    # (what, path, headers, body, status, a fragment of the message)
    ("wrong content type", "/predict", {"Content-Type": "text/plain"}, b"hello", 415, "unsupported Content-Type"),
    ("no content type", "/predict", {}, b"\x89PNG", 415, "unsupported Content-Type"),
    ("text as an image", "/predict", {"Content-Type": "image/png"}, b"just some text", 422, "not a picture"),
    ("truncated image", "/predict", {"Content-Type": "image/png"}, TRUNCATED, 422, "damaged or incomplete"),
    ("decompression bomb", "/predict", {"Content-Type": "image/png"}, BOMB, 422, "megapixel"),
    ("empty picture", "/predict", {"Content-Type": "image/png"}, b"", 400, "empty"),
    ("empty JSON body", "/predict", JSON, b"", 400, "empty"),
    ("invalid JSON", "/predict", JSON, b'{"pixels": [[1, 2', 400, "not valid JSON"),
    ("NaN", "/predict", JSON, as_json({"pixels": PIXELS}).replace(b"0", b"NaN", 1), 400, "not valid JSON"),
    ("infinity", "/predict", JSON, as_json({"pixels": PIXELS}).replace(b"0", b"1e999", 1), 400, "not valid JSON"),
    ("bad base64", "/predict", JSON, as_json({"image": "not base64!"}), 400, "base64"),
    ("base64 of text", "/predict", JSON, as_json({"image": base64.b64encode(b"hello").decode()}), 422,
     "not a picture"),
    ("image not a string", "/predict", JSON, as_json({"image": 42}), 422, "must be a string"),
    ("JSON array", "/predict", JSON, as_json([1, 2, 3]), 422, '"pixels"'),
    ("no known key", "/predict", JSON, as_json({"picture": 1}), 422, '"pixels"'),
    ("both keys", "/predict", JSON, as_json({"pixels": PIXELS, "image": ""}), 422, "one of"),
    ("wrong shape", "/predict", JSON, as_json({"pixels": PIXELS[1:]}), 422, "got 27 rows"),
    ("flat pixels", "/predict", JSON, as_json({"pixels": list(range(784))}), 422, "got 784 rows"),
    ("no pixels", "/predict", JSON, as_json({"pixels": None}), 422, "got null"),
    ("one row", "/predict", JSON, as_json({"pixels": [list(range(28))]}), 422, "got 1 row"),
    ("pixels a string", "/predict", JSON, as_json({"pixels": "0" * 784}), 422, "got a string"),
    ("pixels rows of numbers", "/predict", JSON, as_json({"pixels": list(range(28))}), 422,
     "a row that is not a list but a number"),
    ("ragged rows", "/predict", JSON, as_json({"pixels": PIXELS[:27] + [[0] * 27]}), 422, "a row of 27"),
    ("huge grid", "/predict", JSON, as_json({"pixels": [[0] * 1000] * 1000}), 422, "got 1000 rows"),
    ("words as pixels", "/predict", JSON, as_json({"pixels": [["ink"] * 28] * 28}), 422, "numbers only"),
    ("nested deeper", "/predict", JSON, as_json({"pixels": [[[0]] * 28] * 28}), 422, "numbers only"),
    ("numbers in quotes", "/predict", JSON, as_json({"pixels": [["200"] * 28] * 28}), 422, "numbers only"),
    ("true and false", "/predict", JSON, as_json({"pixels": [[True, 0] * 14] * 28}), 422, "numbers only"),
    ("pixel over 255", "/predict", JSON, as_json({"pixels": [[256] * 28] * 28}), 422, "from 0 to 255"),
    ("negative pixel", "/predict", JSON, as_json({"pixels": [[-1] * 28] * 28}), 422, "from 0 to 255"),
    ("multipart without a file", "/predict", {"Content-Type": "multipart/form-data; boundary=x"},
     b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--x--\r\n', 422, "no file"),
    ("multipart cut off", "/predict", {"Content-Type": "multipart/form-data; boundary=x"},
     b'--x\r\nContent-Disposition: form-data; name="image"; filename="7.png"\r\n\r\n\x89PNG', 400, "cut off"),
    ("multipart without a boundary", "/predict", {"Content-Type": "multipart/form-data"}, b"--x--", 400, "boundary"),
    ("body over the limit", "/predict", {"Content-Type": "image/png"}, b"\0" * (MAX_BODY + 1), 413, "limit"),
    ("bad query", "/predict?number=perhaps", JSON, as_json({"pixels": PIXELS}), 422, "number"),
    ("batch not a list", "/predict/batch", JSON, as_json({"images": 3}), 422, '"images"'),
    ("one picture as a batch", "/predict/batch", {"Content-Type": "image/png"}, TRUNCATED, 415,
     'a batch is JSON {"images": [...]} or a multipart form, not image/png'),
    ("empty batch", "/predict/batch", JSON, as_json({"images": []}), 422, "empty"),
    ("batch over the limit", "/predict/batch", JSON, as_json({"images": [{"pixels": PIXELS}] * (MAX_IMAGES + 1)}),
     413, f"at most {MAX_IMAGES}"),
    ("bad item in a batch", "/predict/batch", JSON, as_json({"images": [{"pixels": PIXELS}, {"pixels": [1]}]}),
     422, "picture 2 of 2: "),
    ("empty picture in a batch", "/predict/batch", JSON,
     as_json({"images": [{"pixels": PIXELS}, {"image": ""}]}), 400, "picture 2 of 2: the picture is empty"),
    ("bad picture in a batch", "/predict/batch", JSON,
     as_json({"images": [{"pixels": PIXELS}, {"image": base64.b64encode(b"no picture").decode()}]}),
     422, "picture 2 of 2: image data: not a picture"),
]


@pytest.mark.parametrize("what, path, headers, body, status, message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_a_4xx_that_says_why(client, seven_png, what, path, headers, body, status, message):
    body = {TRUNCATED: seven_png[:len(seven_png) // 2], BOMB: bomb()}.get(body, body)
    answer = client.post(path, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and message in detail and "\n" not in detail
    still_healthy(client)


def test_two_files_to_predict_asks_for_the_batch_endpoint(client, seven_png):
    answer = client.post("/predict", files=[("image", ("a.png", seven_png, "image/png"))] * 2)
    assert answer.status_code == 422 and "/predict/batch" in answer.json()["detail"]


def test_a_batch_form_cut_off_in_its_second_file_is_refused_not_answered_for_one(client, seven_png):
    whole = (b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
             + seven_png + b"\r\n")
    answer = client.post("/predict/batch", content=whole + whole[:60],
                         headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 400 and "cut off" in answer.json()["detail"]
    assert client.post("/predict/batch", content=whole * 2 + b"--x--\r\n",
                       headers={"Content-Type": "multipart/form-data; boundary=x"}).status_code == 200


@pytest.mark.parametrize("count", [MAX_IMAGES + 1, 3 * MAX_IMAGES])
def test_a_form_of_too_many_files_is_too_large_however_many(client, seven, count):
    small = png(seven)  # the 28×28 digit: many files, a small body
    answer = client.post("/predict/batch", files=[("image", ("a.png", small, "image/png"))] * count)
    assert answer.status_code == 413 and f"at most {MAX_IMAGES}" in answer.json()["detail"]
    still_healthy(client)


def test_streamed_body_over_the_limit(client):
    # no Content-Length: the limit has to be enforced while the body arrives
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 2**20 + 2):
            yield b"\0" * 2**20

    answer = client.post("/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]
    still_healthy(client)


def test_a_body_that_trickles_in_is_cut_off_and_a_slow_model_is_not(classifier, seven_png):
    with running(create_app(classifier, body_seconds=1.0)) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(seven_png) + seven_png[:100])
            started, answer = time.monotonic(), b""
            while b"}" not in answer:  # the JSON body may come in a packet of its own
                piece = slow.recv(4096)
                assert piece, f"the server closed the connection without an answer: {answer!r}"
                answer += piece
            assert time.monotonic() - started < 5
        head, _, body = answer.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 408") and "did not arrive within 1 s" in body
        with httpx.Client(base_url=base, timeout=30) as client:
            # A whole body sent at once is read however long the request then takes.
            answer = client.post("/predict", content=seven_png, headers={"Content-Type": "image/png"})
            assert answer.status_code == 200 and answer.json()["digit"] == 7
            still_healthy(client)


def test_wrong_method_and_unknown_path(client):
    assert client.get("/predict").status_code == 405
    assert client.get("/nowhere").status_code == 404
    still_healthy(client)


def test_damaged_pictures_never_cause_a_server_error(client, seven, seven_png):
    """Random damage to PNG, JPEG, GIF and BMP files: always a 200 or a 4xx, never a 5xx."""
    rng = np.random.default_rng(0)
    pictures = [seven_png]
    for kind in ("JPEG", "GIF", "BMP"):
        buffer = io.BytesIO()
        ink_on_paper(seven).save(buffer, kind)
        pictures.append(buffer.getvalue())
    statuses = set()
    for picture in pictures:
        for _ in range(15):
            damaged = np.frombuffer(picture, np.uint8).copy()
            where = rng.integers(0, len(damaged), size=int(rng.integers(1, 20)))
            damaged[where] = rng.integers(0, 256, size=len(where))
            if rng.random() < 0.3:
                damaged = damaged[:int(rng.integers(8, len(damaged)))]
            answer = client.post("/predict", content=damaged.tobytes(), headers={"Content-Type": "image/png"})
            statuses.add(answer.status_code)
            assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text
    assert 422 in statuses
    still_healthy(client)


# --- the command ----------------------------------------------------------------------------

def digits_command(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digits", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_serve_refuses_bad_options_in_one_line(tmp_path, learned, free_port):
    missing = digits_command("serve", "--model", str(tmp_path / "missing.pt"), "--port", str(free_port()))
    assert missing.returncode == 2 and missing.stderr.startswith("digits: error:")
    assert "no such checkpoint" in missing.stderr and "Traceback" not in missing.stderr

    bad_port = digits_command("serve", "--model", str(learned.checkpoint), "--port", "70000")
    assert bad_port.returncode == 2 and "--port 70000" in bad_port.stderr

    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = digits_command("serve", "--model", str(learned.checkpoint),
                              "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "cannot listen" in busy.stderr and len(busy.stderr.splitlines()) == 1


def wait_until_up(server: subprocess.Popen, client: httpx.Client) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert server.poll() is None, server.stdout.read()
        assert time.monotonic() < deadline, "the server did not come up"
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)


def test_serve_on_the_ipv6_loopback(learned):
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6) as probe:
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    server = subprocess.Popen([sys.executable, "-m", "digits", "serve", "--model", str(learned.checkpoint),
                               "--host", "::1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://[::1]:{port}", timeout=30) as client:
            wait_until_up(server, client)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"on http://[::1]:{port}/ — the API is described at http://[::1]:{port}/docs" in output


def test_serve_with_two_workers(learned, mnist, free_port):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "digits", "serve", "--model", str(learned.checkpoint),
                               "--port", str(port), "--workers", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # a fresh connection per request, so that the kernel hands requests to both workers
    one_request_per_connection = httpx.Limits(max_keepalive_connections=0)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=one_request_per_connection) as c:
            wait_until_up(server, c)
            workers = [pid for pid in open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()
                       if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
            assert len(workers) == 2
            digits = mnist.test.images[:40].numpy()
            for d in digits:
                assert c.post("/predict", json={"pixels": d.tolist()}).status_code == 200
            # both workers count into one set of metrics
            metrics = c.get("/metrics").text
            count = re.search(r'^digits_requests_total\{endpoint="/predict",status="200"\} (\S+)$', metrics, re.M)
            assert count and float(count.group(1)) == 40
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}/" in output
