"""int8 ONNX export (static quantization calibrated on training images) and ONNX files
evaluated through ONNX Runtime."""

import json
import subprocess
import sys
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
NO_TORCH = "import sys; sys.modules['torch'] = None  # importing torch fails\n"


def test_predict_from_an_onnx_file_needs_no_torch(tmp_path) -> None:
    """`mnistlab predict --checkpoint FILE.onnx` in a process where `import torch` fails reads
    the example digits as the torch model does."""
    path = ml.export("final", tmp_path / "final.onnx")
    script = NO_TORCH + "from mnistlab.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", script, "predict", "--checkpoint", str(path), "--json", *EXAMPLES],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    by_onnx = json.loads(done.stdout)
    by_torch = ml.predict(EXAMPLES)
    assert [r["prediction"] for r in by_onnx] == by_torch.labels.tolist()
    assert [r["name"] for r in by_onnx] == by_torch.names
    via_api = ml.predict(EXAMPLES, model=path)
    assert np.allclose(via_api.probabilities, by_torch.probabilities, atol=1e-4)
