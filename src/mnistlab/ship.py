"""Ship a finished run's weights inside the package (used by `predict`, `export`, `serve`)."""

import json
from pathlib import Path

from mnistlab.compare import summarize_run
from mnistlab.errors import MnistlabError
from mnistlab.fileio import write_files
from mnistlab.rundir import MODEL, load_model, read_run

SHIPPED_DIR = Path(__file__).parent / "weights"


def ship_model(run_dir: str | Path, package: Path = SHIPPED_DIR) -> Path:
    """Copy a finished run's model.pt into the package (weights/final.pt) with a description."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if not run.finished:
        raise MnistlabError(f"{run_dir}: has not finished ({run.progress}); ship a finished run")
    _, meta = load_model(run_dir / MODEL)  # refuses a damaged or foreign file
    row = summarize_run(run)
    keys = ("model", "params", "macs", "rf", "epochs", "last_test_acc", "last3_test_acc")
    description = {
        **{key: row[key] for key in keys},
        "dataset": meta["dataset"],
        "experiment": run.experiment,
        "seed": meta["config"]["seed"],
        "run": run_dir.as_posix(),
    }
    write_files(
        {
            package / "final.pt": (run_dir / MODEL).read_bytes(),
            package / "final.json": (json.dumps(description, indent=2) + "\n").encode(),
        }
    )
    print(f"shipped {run_dir / MODEL} as {package / 'final.pt'}")
    return package / "final.pt"
