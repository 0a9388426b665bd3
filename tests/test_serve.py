"""`mnistlab serve`: the JSON API, its answers to bad input, the page's files, a short load test."""

import base64
import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_predict import draw_seven

from mnistlab.cli import main
from mnistlab.data.datasets import get_spec
from mnistlab.inference import classify as predict
from mnistlab.inference import preprocess, saliency
from mnistlab.web import app as serve
from mnistlab.weights import shipped_record, shipped_weights

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
with warnings.catch_warnings():  # starlette's note about a future httpx, not ours
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def classifier() -> serve.Classifier:
    if not shipped_weights().is_file():
        pytest.skip("the shipped model weights/final.pt is not in this checkout")
    return serve.Classifier()


@pytest.fixture(scope="module")
def client(classifier) -> TestClient:
    return TestClient(serve.create_app(classifier))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


SEVEN = png_bytes(draw_seven(size=(200, 160), box=(100, 20, 60, 110), pen=10))


def check_answer(answer: dict, digit: int) -> None:
    assert answer["digit"] == digit
    probs = answer["probabilities"]
    assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-3 and np.argmax(probs) == digit
    assert np.asarray(answer["image"]).shape == (28, 28)
    assert np.asarray(answer["saliency"]).shape == (28, 28)


def test_multipart_upload_is_classified_as_predict_does(client, classifier):
    response = client.post("/api/predict", files={"file": ("seven.png", SEVEN, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    check_answer(answer, 7)
    # the same preprocessing as `mnistlab predict`
    expected = preprocess.mnist_style(preprocess.grayscale_from_bytes(SEVEN))
    np.testing.assert_allclose(answer["image"], expected, atol=6e-4)


def test_json_data_url_is_classified(client):
    url = "data:image/png;base64," + base64.b64encode(SEVEN).decode()
    response = client.post("/api/predict", json={"image": url})
    assert response.status_code == 200, response.text
    check_answer(response.json(), 7)


def test_model_endpoint_describes_the_model(client, classifier):
    info = client.get("/api/model").json()
    shipped = shipped_record()
    assert info["name"] == shipped["model"]
    assert info["parameters"] == sum(p.numel() for p in classifier.model.parameters())
    assert 90 < info["test_accuracy"] <= 100


@pytest.fixture(scope="module")
def fashion_model(tmp_path_factory) -> Path:
    """An untrained seed network whose model file records Fashion-MNIST."""
    import torch

    from mnistlab.models import build
    from mnistlab.runs.checkpoint import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fashion") / "model.pt"
    state = build("seed").state_dict()
    save_model(path, "seed", state, config={}, test_acc=88.5, dataset="fashion-mnist")
    return path


@pytest.mark.parametrize("dataset", ["fashion-mnist", "mnist"])
def test_answers_name_the_class_of_the_models_dataset(dataset, fashion_model, model_file):
    """The answer carries the class's name from the dataset the model file records, and
    /api/model the names by class for the page's bars (MNIST's are the digits)."""
    classes = list(get_spec(dataset).classes)
    path = fashion_model if dataset == "fashion-mnist" else model_file
    client = TestClient(serve.create_app(serve.Classifier(path)))
    info = client.get("/api/model").json()
    assert (info["dataset"], info["classes"]) == (dataset, classes)
    response = client.post("/api/predict", files={"file": ("seven.png", SEVEN, "image/png")})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["digit"] == int(np.argmax(answer["probabilities"]))
    assert answer["name"] == classes[answer["digit"]]


def huge_png() -> bytes:
    return png_bytes(Image.new("1", (6000, 5000)))  # 30 megapixels, a few kB on disk


BAD = {
    "not an image": (
        {"files": {"file": ("notes.png", b"just text\n", "image/png")}},
        400,
        "not a readable image",
    ),
    "empty file": ({"files": {"file": ("empty.png", b"", "image/png")}}, 400, "empty"),
    "blank page": (
        {"files": {"file": ("blank.png", png_bytes(Image.new("L", (60, 50), 255)), "image/png")}},
        400,
        "no ink",
    ),
    "over 10 MB": (
        {"files": {"file": ("big.png", b"\x89PNG" + b"\0" * (11 * 1024 * 1024), "image/png")}},
        413,
        "too large",
    ),
    "huge pixel dimensions": (
        {"files": {"file": ("bomb.png", huge_png(), "image/png")}},
        400,
        "too large",
    ),
    "text file part": (
        {"files": {"file": ("notes.txt", b"hello", "text/plain")}},
        415,
        "not an image",
    ),
    "wrong content type": (
        {"content": SEVEN, "headers": {"content-type": "image/png"}},
        415,
        "multipart/form-data or JSON",
    ),
    "malformed JSON": (
        {"content": b'{"image": ', "headers": {"content-type": "application/json"}},
        400,
        "malformed JSON",
    ),
    "deeply nested JSON": (
        {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}},
        400,
        "must be an object",
    ),
    "deeply nested JSON inside an object": (
        {
            "content": b'{"image": ' + b"[" * 100_000,
            "headers": {"content-type": "application/json"},
        },
        400,
        "nested too deeply",
    ),
    "JSON without image": ({"json": {"picture": 1}}, 400, '"image"'),
    "not a data URL": ({"json": {"image": "http://example.com/a.png"}}, 400, "data URL"),
    "bad base64": ({"json": {"image": "data:image/png;base64,@@@"}}, 400, "base64"),
    "no file field": ({"files": {"other": ("a.png", SEVEN, "image/png")}}, 400, '"file"'),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(client, case):
    kwargs, status, words = BAD[case]
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    again = client.post("/api/predict", files={"file": ("seven.png", SEVEN, "image/png")})
    assert again.status_code == 200 and again.json()["digit"] == 7


def test_body_over_the_limit_is_refused_from_its_declared_length(client):
    response = client.post(
        "/api/predict",
        content=b"x" * 100,
        headers={"content-type": "application/json", "content-length": str(50 * 1024 * 1024)},
    )
    assert response.status_code == 413


@pytest.fixture(scope="module")
def live_server(classifier):
    """The app on a free loopback port, served from a thread by uvicorn, its log records
    going to the root logger (where caplog sees them): the port."""
    import socket
    import threading
    import time

    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(serve.create_app(classifier), port=port, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


class Records(logging.Handler):
    """Every record a logger emits, whatever the root logger and other servers did to it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_gone_before_its_body_is_one_log_line(live_server, monkeypatch):
    """Content-Length 1000, 12 bytes, then the client closes: one warning per connection,
    no traceback, and the server goes on serving."""
    import socket
    import time

    import httpx

    head = (
        b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    # The server's log, read at its source: a server started earlier in this process (with
    # uvicorn's logging config at level "error") changes its level and where it propagates.
    log = logging.getLogger("uvicorn.error")
    seen = Records()
    monkeypatch.setattr(log, "level", logging.INFO)
    monkeypatch.setattr(log, "handlers", [seen])
    monkeypatch.setattr(log, "propagate", False)
    log.manager._clear_cache()  # levels are cached per logger
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", live_server)) as connection:
                connection.sendall(head + b'{"image": 12')
                time.sleep(0.05)
        deadline = time.monotonic() + 10
        while sum("closed the connection" in r.getMessage() for r in seen.records) < 3:
            assert time.monotonic() < deadline, [r.getMessage() for r in seen.records]
            time.sleep(0.05)
        url = f"http://127.0.0.1:{live_server}/api/predict"
        again = httpx.post(url, files={"file": ("seven.png", SEVEN, "image/png")}, timeout=30)
    finally:
        log.manager._clear_cache()
    assert again.status_code == 200 and again.json()["digit"] == 7
    lines = [r.getMessage() for r in seen.records if r.levelno >= logging.WARNING]
    assert (
        lines == ["127.0.0.1 closed the connection after 12 of 1000 body bytes; not answered"] * 3
    )
    assert not any(r.exc_info for r in seen.records)


def test_preview_shows_the_image_as_the_server_read_it(client):
    """?preview=N: the decoded image, fitted into N pixels, for a page that cannot show the
    file itself (a TIFF)."""
    buffer = io.BytesIO()
    draw_seven(size=(300, 240), box=(120, 30, 90, 170), pen=14).save(buffer, "TIFF")
    files = {"file": ("seven.tif", buffer.getvalue(), "image/tiff")}
    answer = client.post("/api/predict?preview=150", files=files).json()
    assert answer["digit"] == 7
    header, data = answer["preview"].split(",", 1)
    assert header == "data:image/png;base64"
    preview = Image.open(io.BytesIO(base64.b64decode(data)))
    assert preview.size == (150, 120) and np.asarray(preview).min() < 50  # the 7, fitted
    assert "preview" not in client.post("/api/predict", files=files).json()
    bad = client.post("/api/predict?preview=big", files=files)
    assert bad.status_code == 400 and "?preview=big" in bad.json()["error"]


@pytest.mark.parametrize("mode", ["RGBA", "RGBA transparent", "RGB", "LA", "L"])
def test_uploads_decode_to_the_pixels_predict_reads(mode):
    """The server's shortcut for the page's opaque canvas (RGBA, no transparent pixel) gives
    the pixels `mnistlab predict` reads, and transparency is still composited on white."""
    background = (0, 0, 0, 0) if mode == "RGBA transparent" else "white"
    image = Image.new(mode.split()[0], (120, 100), background)
    ImageDraw.Draw(image).line([(30, 20), (90, 20), (50, 90)], fill="black", width=9)
    data = png_bytes(image)
    np.testing.assert_array_equal(serve.decode(data), preprocess.grayscale_from_bytes(data))


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(classifier):
    """A phone-sized JPEG is decoded at 1/2..1/8 scale (no smaller than DRAFT_SIDE) and read
    as the whole decode reads it."""
    buffer = io.BytesIO()
    draw_seven(size=(4000, 3000), box=(1600, 600, 900, 1600), pen=120).save(buffer, "JPEG")
    data = buffer.getvalue()
    gray = serve.decode(data)
    assert serve.DRAFT_SIDE <= max(gray.shape) < 2 * serve.DRAFT_SIDE
    whole = preprocess.grayscale_from_bytes(data)
    assert max(whole.shape) == 4000
    assert classifier.predict(data)["digit"] == 7


def test_page_and_docs_load_nothing_from_the_network(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    schema = client.get("/openapi.json").json()
    assert "/api/predict" in schema["paths"] and "/api/model" in schema["paths"]
    for name in ("index.html", "app.js", "style.css", "docs.html"):
        text = (serve.web_files() / name).read_text()
        assert "http://" not in text and "https://" not in text, name
        assert client.get(f"/static/{name}").status_code == 200
    # The favicon, where the page links it and where browsers look without a link.
    for path in ("/static/favicon.svg", "/favicon.ico"):
        icon = client.get(path)
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"


def test_saliency_marks_the_pixels_the_answer_depends_on(classifier):
    """Blanking the most salient ink lowers the answer's probability more than blanking as
    many ink pixels at random."""
    image = preprocess.mnist_style(np.asarray(draw_seven(), dtype=np.float32) / 255)
    model, mean, std = classifier.model, classifier.mean, classifier.std
    digit = int(predict.classify(model, image[None], mean, std).argmax())
    s = saliency.gradient_x_input(model, image, mean, std, digit)
    assert s.shape == (28, 28) and np.abs(s).max() == pytest.approx(1.0)
    assert np.all(s[image == 0] == 0)  # gradient x input: nothing where there is no ink
    ink = np.flatnonzero(image > 0.3)
    top = ink[np.argsort(s.ravel()[ink])[::-1][: len(ink) // 4]]
    rng = np.random.default_rng(0)

    def prob_without(pixels: np.ndarray) -> float:
        blanked = image.copy().ravel()
        blanked[pixels] = 0
        probs = predict.classify(model, blanked.reshape(1, 28, 28), mean, std)
        return float(probs[0, digit])

    random_drop = np.mean([prob_without(rng.choice(ink, len(top), False)) for _ in range(5)])
    assert prob_without(top) < random_drop


def test_serve_refuses_a_port_in_use_in_one_line(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: ") and "--port" in err and len(err.splitlines()) == 1


def test_loopback_is_recognised():
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1")
    assert serve.is_loopback("localhost")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.168.1.5")


def load_module():
    spec = importlib.util.spec_from_file_location("load_serve", ROOT / "benchmarks/load_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_load_run_has_no_errors(tmp_path):
    """The load benchmark, small: a real server with two worker processes, concurrent
    clients, memory summed over the server's processes."""
    if not shipped_weights().is_file():
        pytest.skip("the shipped model weights/final.pt is not in this checkout")
    load = load_module()
    out, numbers = tmp_path / "serve-load.txt", tmp_path / "serve-load.json"
    argv = ["--requests", "40", "--clients", "6", "--single", "10", "--warmup", "6"]
    argv += ["--serve-args", "--workers 2", "--out", str(out), "--json", str(numbers)]
    assert load.main(argv) == 0
    result = json.loads(numbers.read_text())
    assert result["page"]["requests"] == 40 and result["page"]["errors"] == 0
    assert result["single"]["errors"] == 0
    assert 0 < result["page"]["latency_ms"]["p50"] <= result["page"]["latency_ms"]["p99"]
    assert result["server_processes"] >= 3  # the supervisor and two workers, summed
    assert result["rss_mb"]["after_warmup"] > 0 and result["rss_mb"]["after_last"] > 0
    text = out.read_text()
    assert "load average" in text and "command: python benchmarks/load_serve.py" in text


def test_serve_workers_report_a_model_they_cannot_load_in_one_line(tmp_path):
    """With worker processes the model is loaded in each: a damaged file stops the server
    with exit status 1 and one error line from serve."""
    import socket
    import subprocess
    import sys

    damaged = tmp_path / "model.pt"
    damaged.write_bytes(b"not a model")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "mnistlab", "serve", "--port", str(port), "--workers", "2"]
    done = subprocess.run(
        [*command, "--checkpoint", str(damaged)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("mnistlab: error:")]
    assert len(errors) == 1 and str(damaged) in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_torch_is_untouched_by_saliency(classifier):
    """Computing a saliency map leaves no gradients on the shared model."""
    image = np.zeros((28, 28), dtype=np.float32)
    image[6:22, 13:15] = 1
    saliency.gradient_x_input(classifier.model, image, classifier.mean, classifier.std, 1)
    assert all(p.grad is None for p in classifier.model.parameters())
