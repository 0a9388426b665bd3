"""`mnistlab bench --inference`: how fast a trained model classifies, four ways.

torch eager, TorchScript, ONNX fp32 and ONNX int8 (ONNX Runtime), at batch 1 and batch 256,
on 1 and 2 threads, in interleaved rounds (every setting once per round, so a slow patch of
the machine hits all of them alike); the median round's images per second, and file sizes.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

BACKENDS = ("torch eager", "torchscript", "onnx fp32", "onnx int8")
BATCHES = (1, 256)
THREADS = (1, 2)
SECONDS = 0.5  # per setting per round: enough calls for a steady median at batch 1


def _runners(model: torch.nn.Module, folder: Path, data_dir=None) -> tuple[dict, dict[str, int]]:
    """Per backend, a function (batch, threads) -> None that classifies `batch` once; and
    the size in bytes of each file."""
    import onnxruntime as ort

    import mnistlab.api as api
    from mnistlab.inference.exporters import export_torchscript

    files = {
        "onnx fp32": api.export(model, folder / "fp32.onnx"),
        "onnx int8": api.export(model, folder / "int8.onnx", int8=True, data_dir=data_dir),
    }
    script_path = folder / "model.pt"
    script_path.write_bytes(export_torchscript(model, {}))
    state_path = folder / "state.pt"
    torch.save(model.state_dict(), state_path)
    sizes = {
        "model.pt (state dict)": state_path.stat().st_size,
        "torchscript": script_path.stat().st_size,
        **{name: path.stat().st_size for name, path in files.items()},
    }
    with warnings.catch_warnings():  # TorchScript is deprecated; it is measured all the same
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(script_path)).eval()
    sessions: dict[tuple[str, int], Any] = {}
    for name, path in files.items():
        for threads in THREADS:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            sessions[name, threads] = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )

    def torch_run(module):
        def run(batch: np.ndarray, threads: int) -> None:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                module(torch.from_numpy(batch))

        return run

    def onnx_run(name):
        def run(batch: np.ndarray, threads: int) -> None:
            sessions[name, threads].run(None, {"image": batch})

        return run

    runners = {
        "torch eager": torch_run(model.eval()),
        "torchscript": torch_run(scripted),
        "onnx fp32": onnx_run("onnx fp32"),
        "onnx int8": onnx_run("onnx int8"),
    }
    return runners, sizes


def bench_inference(
    target: Any = "final", rounds: int = 5, data_dir=None, progress: bool = True
) -> dict[str, Any]:
    """Images per second per (backend, batch, threads), median of `rounds` interleaved
    rounds, for the trained model `target` (as ml.load takes it), and its file sizes."""
    import mnistlab.api as api
    from mnistlab.data.datasets import load_split, normalization
    from mnistlab.device import cpu_info

    model = api.load(target, device="cpu")
    mean, std = normalization({})
    images, _ = load_split("mnist", False, data_dir, max(BATCHES))
    x = ((images.numpy().astype(np.float32) / 255 - mean) / std)[:, None]
    threads_before = torch.get_num_threads()
    samples: dict[tuple[str, int, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runners, sizes = _runners(model, Path(tmp), data_dir)
        settings = [(b, n, t) for b in BACKENDS for n in BATCHES for t in THREADS]
        try:
            for round_ in range(rounds):
                for backend, size, threads in settings:
                    run, batch = runners[backend], x[:size]
                    run(batch, threads)  # warm: first calls allocate
                    calls, started = 0, time.perf_counter()
                    while (elapsed := time.perf_counter() - started) < SECONDS:
                        run(batch, threads)
                        calls += 1
                    samples.setdefault((backend, size, threads), []).append(calls * size / elapsed)
                if progress:
                    print(f"round {round_ + 1} of {rounds} done", flush=True)
        finally:
            torch.set_num_threads(threads_before)
    cpu = cpu_info()
    return {
        "model": str(target),
        "cpu": f"{cpu['model']} ({', '.join(cpu['flags'])})",
        "load_average": round(os.getloadavg()[0], 2),
        "rounds": rounds,
        "images_per_s": [
            {"backend": b, "batch": n, "threads": t, "median": round(statistics.median(v), 1)}
            for (b, n, t), v in samples.items()
        ],
        "bytes": sizes,
    }


def format_inference(result: dict[str, Any]) -> str:
    """The result as a table: a row per backend, a column per (batch, threads)."""
    columns = [(n, t) for n in BATCHES for t in THREADS]
    rate = {(r["backend"], r["batch"], r["threads"]): r["median"] for r in result["images_per_s"]}
    head = "| backend | " + " | ".join(f"batch {n}, {t} thr" for n, t in columns) + " |"
    lines = [
        f"Images per second, median of {result['rounds']} interleaved rounds; model "
        f"{result['model']}; {result['cpu']}; load average {result['load_average']} at the end",
        "",
        head,
        "| --- |" + " ---: |" * len(columns),
    ]
    for backend in BACKENDS:
        cells = " | ".join(f"{rate[backend, n, t]:,.0f}" for n, t in columns)
        lines.append(f"| {backend} | {cells} |")
    lines += ["", "| file | bytes |", "| --- | ---: |"]
    lines += [f"| {name} | {size:,} |" for name, size in result["bytes"].items()]
    return "\n".join(lines)
