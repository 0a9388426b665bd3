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


@pytest.mark.realdata
def test_the_drill_down_notebook_runs(tmp_path: Path) -> None:
    """A copy runs in a temporary folder (the committed notebook and its outputs stay as they
    are); a failing cell fails the test with its traceback."""
    shutil.copytree(EXAMPLES / "digits", tmp_path / "digits")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = {
        **os.environ,
        "MNISTLAB_SUBSET": "200",
        "MNISTLAB_EPOCHS": "1",
        # The kernel imports the mnistlab these tests import, installed or not.
        "PYTHONPATH": os.pathsep.join(
            [str(Path(mnistlab.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute(env=env)
    text = "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "Receptive field: 42" in text  # the seed network's summary
    assert "Test set: Average loss:" in text  # trained, with the seed notebook's line
    assert "same predictions as PyTorch: True" in text  # the ONNX export
    assert "pass the model: ml.load(run, model=Compact())" in text
    assert list((tmp_path / "runs").iterdir())  # its run directories went to its folder
