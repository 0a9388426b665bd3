"""Models that return logits (PyTorch's convention) beside ones that return log-probabilities:
train, evaluate, predict and export read each as what it is; a run records which."""

import json

import numpy as np
import pytest
import torch
from faults import interrupted_in_epoch
from torch import nn

import mnistlab as ml
from mnistlab.errors import MnistlabError
from mnistlab.models import LOG_PROBS, LOGITS, build, check_fits, output_kind
from mnistlab.runs.checkpoint import load_torch

CPU = torch.device("cpu")
QUIET = dict(device="cpu", threads=1, progress=False, console=False)


class Logits(nn.Module):
    """torchvision's style: features, then a Linear that returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU()
        )
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class LogProbs(Logits):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(super().forward(x), dim=1)


def test_the_first_batch_tells_logits_from_log_probabilities() -> None:
    torch.manual_seed(0)
    assert check_fits(Logits(), "Logits", CPU) == LOGITS
    assert check_fits(LogProbs(), "LogProbs", CPU) == LOG_PROBS
    for name in (
        "seed",
        "gap_thin_stem",
        "peer_fast",
        "pool_bn",
    ):  # the tool's own end in log_softmax
        assert check_fits(build(name), name, CPU, user=False) == LOG_PROBS


def test_a_declared_output_kind_wins_and_a_wrong_one_is_named() -> None:
    model = LogProbs()
    model.outputs = LOGITS  # declared: taken as said, not guessed
    assert output_kind(model, torch.zeros(2, 10)) == LOGITS
    model.outputs = "probabilities"
    with pytest.raises(MnistlabError, match=r"LogProbs\.outputs is 'probabilities'.*'logits'"):
        check_fits(model, "LogProbs", CPU)


def test_a_logits_model_trains_evaluates_and_records_its_kind(tmp_path, data_dir) -> None:
    torch.manual_seed(0)
    result = ml.train(
        Logits(), epochs=3, optimizer={"lr": 0.05}, out=tmp_path / "run", data_dir=data_dir, **QUIET
    )
    last = result.metrics[-1]
    # nll_loss on raw logits would go negative and the accuracy to chance.
    assert 0 < last["train_loss"] < 2.3 and 0 < last["test_loss"] < 2.3
    assert last["test_acc"] > 50
    assert json.loads((tmp_path / "run" / "run.json").read_text())["outputs"] == LOGITS
    assert load_torch(tmp_path / "run" / "model.pt")["outputs"] == LOGITS
    assert load_torch(tmp_path / "run" / "checkpoint.pt")["outputs"] == LOGITS
    # evaluate applies log_softmax too: the loss the last epoch logged, from the run, the
    # model file and the bare module (asked by a dry pass)
    for target in (result, tmp_path / "run", tmp_path / "run" / "model.pt"):
        evaluated = ml.evaluate(target, model=Logits(), device="cpu", data_dir=data_dir)
        assert evaluated["loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    bare = ml.evaluate(result.model, device="cpu", data_dir=data_dir)
    assert bare["loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    confidence = np.load(tmp_path / "run" / "predictions.npz")["confidence"]
    assert ((confidence >= 0.1) & (confidence <= 1)).all()  # probabilities, not exp(logits)


def test_a_run_without_the_record_reads_as_log_probabilities(tmp_path, data_dir) -> None:
    """Runs from before the record: their numbers come out as they did."""
    torch.manual_seed(0)
    result = ml.train(LogProbs(), epochs=1, out=tmp_path / "run", data_dir=data_dir, **QUIET)
    info_path = tmp_path / "run" / "run.json"
    info = json.loads(info_path.read_text())
    assert info["outputs"] == LOG_PROBS
    del info["outputs"]
    info_path.write_text(json.dumps(info))
    model_path = tmp_path / "run" / "model.pt"
    state = load_torch(model_path)
    del state["outputs"]
    torch.save(state, model_path)
    evaluated = ml.evaluate(tmp_path / "run", model=LogProbs(), device="cpu", data_dir=data_dir)
    assert evaluated["loss"] == pytest.approx(result.metrics[-1]["test_loss"], rel=1e-6)


def test_export_names_the_output_for_what_it_is(tmp_path, data_dir) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    result = ml.train(Logits(), epochs=1, out=tmp_path / "run", data_dir=data_dir, **QUIET)
    path = ml.export(result, tmp_path / "logits.onnx")
    assert path.is_absolute()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [LOGITS]
    x = torch.randn(5, 1, 28, 28)
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = result.model.eval()(x).numpy()
    assert np.allclose(got, want, atol=1e-5)
    shipped = ml.export("final", tmp_path / "final.onnx")
    session = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [LOG_PROBS]


def test_the_cli_says_what_the_exported_output_is(tmp_path, data_dir, cli) -> None:
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    ml.train(Logits(), epochs=1, out=tmp_path / "run", data_dir=data_dir, **QUIET)
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"m.{fmt}"
        done = cli(
            "export", "--checkpoint", str(tmp_path / "run"), "--format", fmt, "--out", str(out)
        )
        assert done.returncode == 0, done.stderr
        assert "logits of the classes ('logits'" in done.stdout


# ----------------------------------------------------------------------------- the caller's module


def test_the_callers_module_comes_back_as_it_was_given(tmp_path, data_dir) -> None:
    torch.manual_seed(0)
    net = Logits()
    assert net.training
    result = ml.train(net, epochs=1, out=tmp_path / "run", data_dir=data_dir, **QUIET)
    assert result.model is net
    assert net.training  # not left in eval mode
    assert all(p.is_contiguous() for p in net.parameters())  # not left channels_last
    net.eval()
    ml.train(net, epochs=1, out=tmp_path / "again", data_dir=data_dir, **QUIET)
    assert not net.training


# ----------------------------------------------------------------------------- resume


def test_resume_with_the_callers_model_equals_an_uninterrupted_run(tmp_path, data_dir) -> None:
    """A class defined where the run cannot import it (a notebook): model=Net() continues it."""

    class Net(Logits):  # local: its spec cannot rebuild it
        pass

    options = dict(epochs=3, batch_size=64, seed=4, data_dir=data_dir, **QUIET)
    whole = ml.train(Net, out=tmp_path / "whole", **options)
    with interrupted_in_epoch(3, work_batches=2):
        ml.train(Net, out=tmp_path / "stopped", **options)
    with pytest.raises(MnistlabError, match=r"model=Net\(\)"):
        ml.train(resume=tmp_path / "stopped", **QUIET)
    resumed = ml.train(resume=tmp_path / "stopped", model=Net(), **QUIET)
    strip = lambda records: [  # noqa: E731
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in records
    ]
    assert strip(resumed.metrics) == strip(whole.metrics)
    a, b = (load_torch(tmp_path / r / "model.pt")["model_state"] for r in ("whole", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # no data_dir given again: the run remembers the folder it was trained from
    assert json.loads((tmp_path / "stopped" / "run.json").read_text())["data_dir"] == str(
        data_dir.resolve()
    )


def test_resume_refuses_a_model_that_is_not_a_network(tmp_path, data_dir) -> None:
    with pytest.raises(MnistlabError, match=r"^model= got a int; with resume="):
        ml.train(resume=tmp_path, model=3, **QUIET)


def test_evaluate_a_run_needs_no_data_dir_again(tmp_path, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("MNISTLAB_DATA", str(tmp_path / "empty"))  # the default finds nothing
    torch.manual_seed(0)
    result = ml.train("gap_tiny", epochs=1, out=tmp_path / "run", data_dir=data_dir, **QUIET)
    for target in (result, tmp_path / "run"):
        assert ml.evaluate(target, device="cpu")["accuracy"] == result.test_acc
