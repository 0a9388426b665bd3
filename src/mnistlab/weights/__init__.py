"""The model shipped inside the package: final.pt (a model file) and final.json (its record).

final.json names the model ("model", and its [net] table as "net" when it has one), the
experiment and run it came from ("experiment", "run": the Makefile reads these) and its
numbers. `mnistlab.runs.ship` writes both files; everything else finds them here. Standard
library only, so anything may ask where the shipped model is without importing torch.
"""

import json
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError

WEIGHTS_DIR = Path(__file__).parent
WEIGHTS = "final.pt"
RECORD = "final.json"


def shipped_weights() -> Path:
    """The shipped model file (it may be missing from a checkout or an installation)."""
    return WEIGHTS_DIR / WEIGHTS


def shipped_record() -> dict[str, Any]:
    """final.json: what the shipped model is and where it came from."""
    path = shipped_weights().parent / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MnistlabError(
            f"{path}: the shipped model's record cannot be read ({e}); reinstall mnistlab"
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        raise MnistlabError(f"{path}: names no model; reinstall mnistlab")
    return record
