"""`mnistlab export`: the ONNX and TorchScript files compute what the PyTorch model does."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.cli import main
from mnistlab.data.datasets import MNIST
from mnistlab.errors import MnistlabError
from mnistlab.inference import exporters as export
from mnistlab.models import build, list_models
from mnistlab.models.summary import count_parameters
from mnistlab.runs.checkpoint import save_model


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """The smallest registered model with random weights, and its model.pt."""
    torch.manual_seed(0)
    name = min(list_models(), key=lambda n: count_parameters(build(n)))
    model = build(name).eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, name, model.state_dict(), config={}, test_acc=10.0)
    return model, path


@pytest.fixture(scope="module")
def onnx_file(trained_like, tmp_path_factory) -> Path:
    _, checkpoint = trained_like
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert (
        main(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)])
        == 0
    )
    return out


def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(n, 1, 28, 28, generator=generator) for n in (64, 1)]


def test_onnx_matches_pytorch_for_any_batch_size(trained_like, onnx_file):
    import onnxruntime

    model, _ = trained_like
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "image" and isinstance(graph_input.shape[0], str)  # dynamic
    for x in batches():
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = model(x).numpy()
        assert got.shape == (len(x), 10)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_onnx_carries_the_normalisation(onnx_file):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert float(props["mean"]) == MNIST.mean and float(props["std"]) == MNIST.std


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_pytorch_for_any_batch_size(trained_like, tmp_path, capsys):
    model, checkpoint = trained_like
    out = tmp_path / "model.ts"
    args = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]
    assert main(args) == 0

    extra = {"mnistlab.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["mnistlab.json"])["std"] == MNIST.std
    for x in batches():
        with torch.no_grad():
            np.testing.assert_allclose(scripted(x).numpy(), model(x).numpy(), atol=1e-5, rtol=0)


def test_export_reports_the_file_and_leaves_no_temporary_files(trained_like, tmp_path, capsys):
    _, checkpoint = trained_like
    out = tmp_path / "sub" / "model.pt"
    args = ["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"wrote {out} (torchscript, {out.stat().st_size:,} bytes")
    assert [p.name for p in out.parent.iterdir()] == ["model.pt"]


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_missing_onnx_extras_is_a_clear_error(trained_like, monkeypatch, package):
    model, _ = trained_like
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    with pytest.raises(MnistlabError, match=r"pip install 'mnistlab\[export\]'"):
        export.export_onnx(model, {})


def test_bad_checkpoint_writes_nothing(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    foreign.write_text("hello")
    out = tmp_path / "model.onnx"
    code = main(["export", "--checkpoint", str(foreign), "--format", "onnx", "--out", str(out)])
    assert code == 1
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pt"]


def test_out_must_not_be_a_directory(trained_like, tmp_path):
    model, _ = trained_like
    with pytest.raises(MnistlabError, match="is a directory"):
        export.export_model(model, "torchscript", tmp_path, {})
