"""A bounded load test of `mnistlab serve` on loopback: N requests from C concurrent clients.

    python benchmarks/load_serve.py --requests 500 --clients 16 --out results/web/load.json

Starts the server in a subprocess on a free loopback port, posts drawn digits (PNG, as the page
sends them) to /api/predict, and stops by itself. Records errors, latency percentiles, and the
server's resident memory after the first `--warmup` requests and after the last.
"""

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

from mnistlab.fileio import atomic_write_text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def drawn_digits(count: int, seed: int = 0) -> list[bytes]:
    """Canvas-like PNGs: random pen strokes on white, 280x280, as the page sends."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        image = Image.new("RGB", (280, 280), "white")
        draw = ImageDraw.Draw(image)
        points = [tuple(p) for p in rng.integers(60, 220, size=(int(rng.integers(3, 7)), 2))]
        draw.line(points, fill="black", width=18, joint="curve")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def start_server(port: int) -> subprocess.Popen:
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "mnistlab", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/model", timeout=1).raise_for_status()
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("server did not start within 60 s")


def run_load(url: str, bodies: list[bytes], clients: int, warmup: int, pid: int) -> dict:
    """Send every body once from `clients` threads; latencies, errors, memory."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    done = [0]
    memory: dict[str, float] = {"before": rss_mb(pid)}
    queue = iter(range(len(bodies)))

    def worker() -> None:
        with httpx.Client(timeout=30) as http:
            while True:
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                files = {"file": ("digit.png", bodies[index], "image/png")}
                start = time.perf_counter()
                try:
                    response = http.post(url, files=files)
                    ok = response.status_code == 200 and "digit" in response.json()
                    problem = None if ok else f"{response.status_code}: {response.text[:100]}"
                except httpx.HTTPError as e:
                    problem = repr(e)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)
                    done[0] += 1
                    if done[0] == warmup:
                        memory["after_first"] = rss_mb(pid)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    memory["after_last"] = rss_mb(pid)
    ms = np.asarray(latencies) * 1000
    return {
        "errors": len(errors),
        "error_samples": errors[:5],
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(bodies) / wall, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p90": round(float(np.percentile(ms, 90)), 1),
            "p99": round(float(np.percentile(ms, 99)), 1),
            "max": round(float(ms.max()), 1),
        },
        "rss_mb": {k: round(v, 1) for k, v in memory.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--warmup", type=int, default=None, help="default: a tenth of --requests")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    warmup = args.warmup or max(1, args.requests // 10)
    port = free_port()
    load_before = os.getloadavg()[0]  # other work on the machine slows every request
    server = start_server(port)
    try:
        result = run_load(
            f"http://127.0.0.1:{port}/api/predict",
            drawn_digits(args.requests),
            args.clients,
            warmup,
            server.pid,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    rss = result["rss_mb"]
    result = {
        "requests": args.requests,
        "clients": args.clients,
        "warmup": warmup,
        **result,
        "rss_growth_mb": round(rss["after_last"] - rss["after_first"], 1),
        "cpus": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
