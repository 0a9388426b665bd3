"""Ship a finished run's weights inside the package (used by `predict`, `export`, `serve`)."""

import json
from pathlib import Path

from mnistlab import weights
from mnistlab.errors import MnistlabError
from mnistlab.fileio import write_files
from mnistlab.runs.compare import summarize_run
from mnistlab.runs.rundir import MODEL, load_model, read_run


def ship_model(run_dir: str | Path, package: Path | None = None) -> Path:
    """Copy a finished run's model.pt into the package (weights/final.pt) with its record,
    final.json (see mnistlab.weights); `package`: another folder to write them to."""
    package = weights.WEIGHTS_DIR if package is None else Path(package)
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if not run.finished:
        raise MnistlabError(f"{run_dir}: has not finished ({run.progress}); ship a finished run")
    _, meta = load_model(run_dir / MODEL)  # refuses a damaged or foreign file
    row = summarize_run(run)
    keys = ("model", "params", "macs", "rf", "epochs", "last_test_acc", "last3_test_acc")
    description = {
        **{key: row[key] for key in keys},
        # A [net] model's table, so that models.build("final") rebuilds it.
        **({"net": run.config["net"]} if run.config.get("net") else {}),
        "dataset": meta["dataset"],
        "experiment": run.experiment,
        "seed": meta["config"]["seed"],
        "run": run_dir.as_posix(),
    }
    write_files(
        {
            package / weights.WEIGHTS: (run_dir / MODEL).read_bytes(),
            package / weights.RECORD: (json.dumps(description, indent=2) + "\n").encode(),
        }
    )
    print(f"shipped {run_dir / MODEL} as {package / weights.WEIGHTS}")
    return package / weights.WEIGHTS
