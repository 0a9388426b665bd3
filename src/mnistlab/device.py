"""Which device and precision a command runs on, and what CPU it is (recorded in run.json)."""

from pathlib import Path

import torch

from mnistlab.errors import MnistlabError, given

# Device types this tool trains and predicts on; others (mps, meta, xla, ...) are refused.
DEVICE_TYPES = ("cpu", "cuda")
# CPU flags that decide speed and float summation order (AVX-512 and AVX2 machines sum in
# different orders, so the same seed follows another path), and native bf16 support.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """The one device rule: the device named (cpu, cuda, cuda:N), or CUDA when present, else
    the CPU. Every command and API function that takes a device comes here."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def shown() -> str:  # spelled only when there is something to say
        return given("device", str(name))

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise MnistlabError(f"{shown()} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in DEVICE_TYPES:
        raise MnistlabError(f"{shown()}: this tool runs on cpu or cuda; use one of those")
    if device.type == "cpu" and device.index not in (None, 0):
        raise MnistlabError(f"{shown()}: there is one CPU device; use {given('device', 'cpu')}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MnistlabError(
                f"{shown()}: CUDA is not available here; use {given('device', 'cpu')}"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise MnistlabError(
                f"{shown()}: there are {torch.cuda.device_count()} CUDA devices; "
                "use cuda:0 or another that exists"
            )
    return device


MAX_THREADS = 1024  # a sanity bound: torch takes any positive int


def use_threads(threads: int | None) -> None:
    """Set torch's CPU thread count (None: leave torch's choice, one per core)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise MnistlabError(
            f"{given('threads', threads)}: must be a whole number from 1 to {MAX_THREADS}"
        )
    torch.set_num_threads(threads)


def cpu_info(cpuinfo: str | None = None) -> dict[str, object]:
    """The CPU's model name and the vector flags in CPU_FLAGS it has (Linux; else unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"model": "unknown", "flags": []}
    model, flags = "unknown", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def resolve_precision(precision: str, device: torch.device, cpu: dict[str, object]) -> str:
    """'fp32' or 'bf16': 'auto' picks bf16 only where the hardware computes it natively."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = {"avx512_bf16", "amx_bf16"} & set(cpu["flags"])  # type: ignore[arg-type]
    return "bf16" if native else "fp32"
