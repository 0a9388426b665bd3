"""examples/drill-down.ipynb runs: every cell, on a fresh kernel, on a small subset of MNIST."""

import os
import shutil
from pathlib import Path

import pytest

import mnistlab

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "drill-down.ipynb"
OWN_MODEL = EXAMPLES / "own-model.ipynb"


def execute(notebook_path: Path, folder: Path, **env: str) -> str:
    """Run a copy of a notebook in `folder` (beside a copy of digits/); its text outputs."""
    shutil.copytree(EXAMPLES / "digits", folder / "digits")
    notebook = nbformat.read(notebook_path, as_version=4)
    env = {
        **os.environ,
        **env,
        # The kernel imports the mnistlab these tests import, installed or not.
        "PYTHONPATH": os.pathsep.join(
            [str(Path(mnistlab.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": folder}}
    )
    client.execute(env=env)
    return "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.realdata
def test_the_drill_down_notebook_runs(tmp_path: Path) -> None:
    """A copy runs in a temporary folder (the committed notebook and its outputs stay as they
    are); a failing cell fails the test with its traceback."""
    text = execute(NOTEBOOK, tmp_path, MNISTLAB_SUBSET="200", MNISTLAB_EPOCHS="1")
    assert "Receptive field: 42" in text  # the seed network's summary
    assert "Test set: Average loss:" in text  # trained, with the seed notebook's line
    assert "same predictions as PyTorch: True" in text  # the ONNX export
    assert "pass the model: ml.load(run, model=Compact())" in text
    assert list((tmp_path / "runs").iterdir())  # its run directories went to its folder


@pytest.mark.realdata
def test_the_own_model_notebook_runs(tmp_path: Path) -> None:
    """A logits model from train to a checked ONNX file, on 500 training and 300 test images."""
    pytest.importorskip("onnxruntime")
    text = execute(
        OWN_MODEL,
        tmp_path,
        MNISTLAB_SUBSET="500",
        MNISTLAB_EPOCHS="1",
        MNISTLAB_TEST_SUBSET="300",
    )
    assert "outputs: logits" in text  # the dry pass saw logits, the run recorded it
    assert "output: ['logits']" in text  # the ONNX graph's output is named for it
    assert "same class as ml.predict on all 300 test images: True" in text
    assert "(within 1e-4: True)" in text
    assert "test accuracy" in text and "loss -" not in text  # a loss, not nll of logits
