"""int8 ONNX export (static quantization calibrated on training images) and ONNX files
evaluated through ONNX Runtime."""

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest

import mnistlab as ml
from mnistlab.errors import MnistlabError
from mnistlab.inference.onnxfile import OnnxModel

pytest.importorskip("onnxruntime")


@pytest.mark.realdata
def test_int8_export_is_calibrated_on_training_images_and_close_to_fp32(tmp_path) -> None:
    fp32 = ml.export("final", tmp_path / "fp32.onnx")
    int8 = ml.export("final", tmp_path / "int8.onnx", int8=True)
    meta = {p.key: p.value for p in onnx.load(int8).metadata_props}
    assert meta["int8"] == "true"
    assert meta["calibration"].startswith("2000 mnist training images, seed 0")
    assert (meta["mean"], meta["std"], meta["outputs"]) == ("0.1307", "0.3081", "log_probs")
    graph_ops = {node.op_type for node in onnx.load(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= graph_ops  # QDQ
    assert int8.stat().st_size < fp32.stat().st_size
    a, b = (ml.evaluate(f, limit=2000) for f in (fp32, int8))
    assert a["total"] == b["total"] == 2000 and a["classes"] == [str(d) for d in range(10)]
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.25
    assert a["accuracy"] == pytest.approx(ml.evaluate("final", limit=2000)["accuracy"], abs=0.05)


def test_calibration_reads_the_given_data_folder(tmp_path, data_dir) -> None:
    path = ml.export("final", tmp_path / "int8.onnx", int8=True, data_dir=data_dir)
    model = OnnxModel(path)
    assert model.meta["calibration"].startswith("320 mnist training images")  # all it has
    assert ml.evaluate(path, data_dir=data_dir)["total"] == 100


def test_int8_refusals_name_the_argument(tmp_path, cli) -> None:
    with pytest.raises(MnistlabError, match=r"^int8= quantizes ONNX files only"):
        ml.export("final", tmp_path / "m.pt", "torchscript", int8=True)
    with pytest.raises(MnistlabError, match=r"^int8='yes': must be True or False"):
        ml.export("final", tmp_path / "m.onnx", int8="yes")
    done = cli("export", "--format", "torchscript", "--int8", "--out", str(tmp_path / "m.pt"))
    assert done.returncode == 1
    assert done.stderr.startswith("mnistlab: error: --int8 quantizes ONNX files only")
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_onnx_file_that_cannot_be_read_is_one_line(tmp_path, cli) -> None:
    with pytest.raises(MnistlabError, match=r"no such ONNX file"):
        ml.evaluate(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    done = cli("evaluate", str(bad))
    assert done.returncode == 1 and "not a readable ONNX file" in done.stderr
    assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- no torch

EXAMPLES = sorted(str(p) for p in (Path(__file__).parents[1] / "examples" / "digits").glob("*.*"))
EXAMPLES = [p for p in EXAMPLES if not p.endswith(".py")]


def without_torch(tmp_path: Path) -> dict[str, str]:
    """An environment whose processes (and their children) fail to import torch, as where it
    is not installed; mnistlab from this source tree."""
    blocked = tmp_path / "notorch" / "torch"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    src = Path(ml.__file__).parents[1]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked.parent), str(src)])}


def test_predict_from_an_onnx_file_needs_no_torch(tmp_path) -> None:
    """`mnistlab predict --checkpoint FILE.onnx` where torch cannot be imported reads the
    example digits as the torch model does."""
    path = ml.export("final", tmp_path / "final.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "mnistlab", "predict", "--checkpoint", str(path), "--json"]
        + EXAMPLES,
        capture_output=True,
        text=True,
        timeout=120,
        env=without_torch(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    by_onnx = json.loads(done.stdout)
    by_torch = ml.predict(EXAMPLES)
    assert [r["prediction"] for r in by_onnx] == by_torch.labels.tolist()
    assert [r["name"] for r in by_onnx] == by_torch.names
    via_api = ml.predict(EXAMPLES, model=path)
    assert np.allclose(via_api.probabilities, by_torch.probabilities, atol=1e-4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_from_an_int8_onnx_file_needs_no_torch(tmp_path) -> None:
    """Two server processes where torch cannot be imported: the page's model info says why
    there is no overlay, and a drawing is answered without saliency."""
    path = ml.export("final", tmp_path / "int8.onnx", int8=True)
    port = free_port()
    command = [sys.executable, "-m", "mnistlab", "serve", "--checkpoint", str(path)]
    server = subprocess.Popen(
        [*command, "--port", str(port), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=without_torch(tmp_path),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/model", timeout=5) as response:
                    info = json.load(response)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        assert info["saliency"].startswith("an ONNX file has no gradients")
        image = "data:image/png;base64," + base64.b64encode(Path(EXAMPLES[0]).read_bytes()).decode()
        request = urllib.request.Request(
            f"{base}/api/predict",
            data=json.dumps({"image": image}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        assert answer["saliency"] is None
        assert answer["digit"] == ml.predict(EXAMPLES[0]).labels[0]
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output
