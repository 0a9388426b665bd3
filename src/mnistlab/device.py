"""Which device a command runs on: one rule for every command."""

import torch

from mnistlab.errors import MnistlabError

# Device types this tool trains and predicts on; others (mps, meta, xla, ...) are refused.
DEVICE_TYPES = ("cpu", "cuda")


def pick_device(name: str | None) -> torch.device:
    """The device named (cpu, cuda, cuda:N), or CUDA when present, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise MnistlabError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in DEVICE_TYPES:
        raise MnistlabError(f"--device {name}: this tool runs on cpu or cuda; use one of those")
    if device.type == "cpu" and device.index not in (None, 0):
        raise MnistlabError(f"--device {name}: there is one CPU device; use --device cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MnistlabError(f"--device {name}: CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MnistlabError(
                f"--device {name}: there are {torch.cuda.device_count()} CUDA devices; "
                "use cuda:0 or another that exists"
            )
    return device
