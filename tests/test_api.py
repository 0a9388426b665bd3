"""The Python API (`import mnistlab as ml`), a user's own nn.Module end to end included."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

import mnistlab as ml
from mnistlab import api
from mnistlab.cli import main
from mnistlab.config import from_dict
from mnistlab.errors import MnistlabError
from mnistlab.inference.preprocess import read_grayscale
from mnistlab.runs import rundir
from mnistlab.training import trainer

ROOT = Path(__file__).resolve().parents[1]
DIGITS = sorted((ROOT / "examples" / "digits").glob("*.png"))
QUIET = {"progress": False, "console": False}


class TinyNet(nn.Module):
    """A user's model: one strided conv and a linear layer (the squares dataset's classes are
    places, which a linear layer over the map tells apart)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 5, stride=4)  # 28 -> 6
        self.relu = nn.ReLU()
        self.fc = nn.Linear(width * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


def notebook_class() -> type[nn.Module]:
    """TinyNet as if defined in a notebook cell: its module is __main__."""
    return type("Net", (TinyNet,), {"__module__": "__main__"})


def train_tiny(model, data_dir: Path, out: Path, **changes) -> "ml.TrainResult":
    settings = dict(epochs=2, batch_size=32, test_batch_size=50, optimizer={"lr": 0.05})
    settings.update(changes)
    return ml.train(model, out=out, data_dir=data_dir, device="cpu", **QUIET, **settings)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key].cpu(), sb[key].cpu()), key


# ----------------------------------------------------------------------------- the package


def test_import_mnistlab_stays_light_and_help_shows_the_functions() -> None:
    code = (
        "import sys, mnistlab as ml; heavy = [m for m in ('torch', 'mnistlab.api') "
        "if m in sys.modules]; print(heavy, set(dir(ml)) == {*ml.__all__, '__version__'})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True"
    # help(ml) lists every public name; help(ml.train) and `ml.train?` show the function's
    # own docstring and signature (no module stands in for a function).
    code = "import pydoc, mnistlab as ml; print(pydoc.render_doc(ml, renderer=pydoc.plaintext))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for name in ml.__all__:
        assert f"{name}" in out.stdout, name
    import inspect

    for name in ("train", "evaluate", "predict", "export", "summary", "run_search", "confirm"):
        function = getattr(ml, name)
        assert inspect.isfunction(function), name
        assert inspect.getdoc(function) == inspect.getdoc(getattr(api, name)), name
    assert "model_or_experiment" in str(inspect.signature(ml.train))
    assert inspect.getdoc(ml.train).startswith("Train a model")


def test_load_final_is_the_shipped_model_in_eval_mode() -> None:
    model = ml.load("final")
    shipped = json.loads((ROOT / "src/mnistlab/weights/final.json").read_text())
    assert not model.training
    s = ml.summary(model)
    assert (s.total_params, s.macs, s.rf) == (shipped["params"], shipped["macs"], shipped["rf"])
    assert "Total MACs" in str(s) and s._repr_html_().startswith("<table>")


# ----------------------------------------------------------------------------- summary


def test_summary_of_a_module_a_name_and_a_spec() -> None:
    s = ml.summary(TinyNet())
    assert [r["output_shape"] for r in s.rows] == [[-1, 8, 6, 6], [-1, 8, 6, 6], [-1, 10]]
    assert s.rows[0]["rf"] == 5 and s.rows[0]["jump"] == 4
    assert s.rf == 25 and s.is_global  # the linear layer sees the whole map
    assert s.total_params == sum(p.numel() for p in TinyNet().parameters())
    assert ml.summary("seed").rf == 42
    assert ml.summary("test_api:TinyNet").total_params == s.total_params
    assert ml.summary(TinyNet).total_params == s.total_params
    conv = ml.summary(nn.Conv2d(1, 4, 3), input_size=(1, 10, 10))
    assert conv.rows[0]["output_shape"] == [-1, 4, 8, 8]


def test_summary_of_a_model_failing_on_the_shape_is_one_line() -> None:
    with pytest.raises(MnistlabError, match="fails on input shape 3,28,28") as e:
        ml.summary(TinyNet(), input_size=(3, 28, 28))
    assert "\n" not in str(e.value)
    with pytest.raises(MnistlabError, match="pass an nn.Module"):
        ml.summary(42)


# ----------------------------------------------------------------------------- data


def test_load_data_gives_tensors_and_a_normalised_loader(data_dir: Path) -> None:
    train = ml.load_data("mnist", "train", limit=100, batch_size=40, data_dir=data_dir)
    assert len(train) == 100 and train.images.dtype == torch.uint8
    assert train.images.shape == (100, 28, 28) and train.labels.tolist()[:3] == [0, 1, 2]
    assert [len(y) for _, y in train.loader] == [40, 40, 20]
    assert train.loader.shuffle  # the training split is shuffled by default
    plain = ml.load_data(limit=100, batch_size=40, shuffle=False, data_dir=data_dir)
    x, y = next(iter(plain.loader))
    assert x.shape == (40, 1, 28, 28) and torch.equal(y, plain.labels[:40])
    expected = (plain.images[:40].float() / 255 - plain.mean) / plain.std
    assert torch.allclose(x[:, 0], expected)
    test = ml.load_data(split="test", data_dir=data_dir)
    assert len(test) == 100 and test.classes[7] == "7"
    assert torch.equal(next(iter(test.loader))[1], test.labels[:64])  # not shuffled
    with pytest.raises(MnistlabError, match="split must be 'train' or 'test'"):
        ml.load_data(split="val", data_dir=data_dir)
    with pytest.raises(MnistlabError, match="missing; run `mnistlab data fetch"):
        ml.load_data(data_dir=data_dir / "nowhere")


# ----------------------------------------------------------------------------- training


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_a_users_module_trains_evaluates_reloads_and_exports(
    tmp_path: Path, data_dir: Path
) -> None:
    torch.manual_seed(0)
    net = TinyNet()
    result = train_tiny(net, data_dir, tmp_path / "run")
    # Trained in place, given back in train mode as it came, and recorded as a class that
    # can be rebuilt.
    assert result.model is net and net.training
    assert [r["epoch"] for r in result.metrics] == [1, 2]
    assert result.metrics == rundir.read_metrics(result.run_dir)
    assert result.test_acc > 50  # the squares are easy; chance is 10%
    assert rundir.read_config(result.run_dir).model == "test_api:TinyNet"
    info = rundir.read_info(result.run_dir)
    s = ml.summary(net)
    assert (info["model"], info["params"], info["rf"]) == ("test_api:TinyNet", s.total_params, 25)

    evaluated = ml.evaluate(result.run_dir, data_dir=data_dir)
    assert evaluated["accuracy"] == pytest.approx(result.test_acc)
    assert evaluated["total"] == 100 and len(evaluated["confusion_matrix"]) == 10
    assert ml.evaluate(result, data_dir=data_dir, limit=30)["total"] == 30

    reloaded = ml.load(result.run_dir)
    assert type(reloaded) is TinyNet and not reloaded.training
    assert_same_weights(reloaded, net)

    onnx_file = ml.export(result.run_dir, tmp_path / "net.onnx")
    ts_file = ml.export(net, tmp_path / "net.pt", format="torchscript")
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(5, 1, 28, 28)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    from_onnx = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        expected = net(x)
        scripted = torch.jit.load(str(ts_file))(x)
    np.testing.assert_allclose(from_onnx, expected.numpy(), atol=1e-4)
    torch.testing.assert_close(scripted, expected)

    # The run is a run directory like any other: the command line rebuilds the model too.
    assert main(["evaluate", str(result.run_dir), "--data-dir", str(data_dir)]) == 0


def test_a_notebook_class_is_recorded_by_name_and_loaded_with_the_model(
    tmp_path: Path, data_dir: Path, capsys
) -> None:
    Net = notebook_class()
    result = train_tiny(Net(), data_dir, tmp_path / "run", epochs=1)
    assert rundir.read_config(result.run_dir).model == "__main__:Net"
    with pytest.raises(MnistlabError, match=r"pass the model: ml.load\(run, model=Net\(\)\)") as e:
        ml.load(result.run_dir)
    assert "\n" not in str(e.value)
    reloaded = ml.load(result.run_dir, model=Net())
    assert_same_weights(reloaded, result.model)
    assert main(["evaluate", str(result.run_dir), "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mnistlab: error: ") and err.count("\n") == 1
    # Weights that do not fit the model passed say so.
    with pytest.raises(MnistlabError, match="weights do not fit model '__main__:Net'"):
        ml.load(result.run_dir, model=TinyNet(width=4))


def test_a_class_is_built_after_seeding_and_a_factory_file_is_a_spec(
    tmp_path: Path, data_dir: Path
) -> None:
    a = train_tiny(TinyNet, data_dir, tmp_path / "a", epochs=1, seed=5)
    b = train_tiny(TinyNet, data_dir, tmp_path / "b", epochs=1, seed=5)
    assert_same_weights(a.model, b.model)  # the seed alone decides the initial weights
    models_file = tmp_path / "my_models.py"
    models_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_api import TinyNet\n\n"
        "def small():\n    return TinyNet(width=4)\n"
    )
    spec = f"{models_file}:small"
    c = train_tiny(spec, data_dir, tmp_path / "c", epochs=1)
    assert c.config.name == "small" and rundir.read_config(c.run_dir).model == spec
    assert_same_weights(ml.load(c.run_dir), c.model)


def test_train_is_the_trainer(tmp_path: Path, data_dir: Path, capsys) -> None:
    """A registered model trained through the API matches train_run on the same config."""
    result = ml.train(
        "gap_thin_stem_tiny",
        epochs=1,
        limit_train=96,
        batch_size=32,
        optimizer={"lr": 0.05},
        out=tmp_path / "api",
        data_dir=data_dir,
        device="cpu",
        progress=False,
    )
    assert "Test set: Average loss:" in capsys.readouterr().out  # the seed notebook's line
    cfg = from_dict(
        {
            "name": "gap_thin_stem_tiny",
            "model": "gap_thin_stem_tiny",
            "epochs": 1,
            "limit_train": 96,
            "batch_size": 32,
            "optimizer": {"lr": 0.05},
        }
    )
    assert result.config == cfg
    records = trainer.train_run(cfg, tmp_path / "cli", torch.device("cpu"), data_dir, console=False)
    timing = ("seconds", "images_per_s")
    strip = [{k: v for k, v in r.items() if k not in timing} for r in result.metrics]
    assert strip == [{k: v for k, v in r.items() if k not in timing} for r in records]
    assert result.config.optimizer.momentum == 0.9  # a table override keeps the other keys
    fig = ml.plot_run(result)
    acc_ax, loss_ax = fig.axes[:2]
    assert len(acc_ax.lines) == 3  # train, test, the 99.4% target line
    lowest = min(r[k] for r in result.metrics for k in r if k.endswith("_acc"))
    assert acc_ax.get_ylim()[0] <= lowest  # every point shows, however low
    assert isinstance(fig, Figure) and fig._repr_png_().startswith(b"\x89PNG")  # Jupyter shows it
    assert (
        "matplotlib.pyplot" not in sys.modules or not sys.modules["matplotlib.pyplot"].get_fignums()
    )


@pytest.mark.parametrize(
    ("target", "changes", "message"),
    [
        ("seed", {"epochz": 2}, "epochz=2: unknown key 'epochz'"),
        ("seed", {"epochs": 0}, "epochs=0: epochs must be >= 1"),
        ("seed", {"optimizer": {"lr": -1.0}}, "optimizer={'lr': -1.0}: optimizer.lr must be > 0"),
        ("nosuchnet", {}, "model='nosuchnet': model must be one of"),
        ("no_such_module:Net", {}, "no module 'no_such_module'"),
        ("missing.toml", {}, "cannot read experiment file"),
        (3, {}, "train: got a int"),
        (TinyNet(), {"model": "seed"}, "the nn.Module passed is trained"),
    ],
)
def test_bad_training_input_is_one_line_error(
    tmp_path: Path, data_dir: Path, target, changes, message
) -> None:
    with pytest.raises(MnistlabError, match=message) as e:
        ml.train(target, out=tmp_path / "run", data_dir=data_dir, **QUIET, **changes)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- predict


def test_predict_files_and_arrays_like_the_command(capsys) -> None:
    assert main(["predict", "--json", *map(str, DIGITS)]) == 0
    expected = json.loads(capsys.readouterr().out)
    results = ml.predict(DIGITS)
    assert [r.as_dict() for r in results] == expected
    assert ml.predict(str(DIGITS[0]))[0].prediction == expected[0]["prediction"]
    # The same images in memory (uint8 and floats in [0, 1]) get the same predictions.
    grays = [read_grayscale(path) for path in DIGITS]
    from_floats = [ml.predict(gray)[0] for gray in grays]
    from_bytes = ml.predict(np.round(grays[0] * 255).astype(np.uint8))[0]
    assert [r.prediction for r in from_floats] == [e["prediction"] for e in expected]
    assert from_bytes.prediction == expected[0]["prediction"]
    assert from_floats[0].file == "image 0"
    with pytest.raises(MnistlabError, match="image 0: blank image"):
        ml.predict(np.zeros((1, 28, 28)), preprocess=True)
    bad = ml.predict(np.zeros((1, 28, 28)), preprocess=True, errors="keep")[0]
    assert bad.prediction is None and bad.error.startswith("image 0: ")


def test_predict_with_a_trained_model_and_no_preprocessing(data_dir: Path) -> None:
    test = ml.load_data(split="test", data_dir=data_dir, limit=20)
    model = ml.load("final")
    results = ml.predict(test.images, model=model, preprocess=False)
    probs = torch.softmax(model((test.images[:, None].float() / 255 - 0.1307) / 0.3081), dim=1)
    assert [r.prediction for r in results] == probs.argmax(dim=1).tolist()
    with pytest.raises(MnistlabError, match="no such run directory or weights file"):
        ml.predict(DIGITS, model="no/such/run")
