"""A bounded load test of `mnistlab serve` on loopback, with the page's default settings.

    python benchmarks/load_serve.py                  # writes results/bench/serve-load.txt

Starts `mnistlab serve` (its default workers and threads, or --serve-args) in a subprocess on a
free loopback port, then measures

1. one client, one request at a time: a 300x300 PNG posted as a multipart upload (--single);
2. --clients clients, --requests requests in all, each what the page sends while drawing: a
   280x280 canvas PNG as a data URL in JSON. The answer holds the saliency map, which the
   page's overlay (on by default) paints: the server computes it for every answer.

and the resident memory summed over every server process (uvicorn's supervisor, its workers,
any helper): at start, after a warm-up, after the last request. The machine's load average
before and after goes in the file: other work on the same cores slows every number. Every
request has a timeout, the run a deadline, and the server is stopped however the run ends.
"""

import argparse
import base64
import http.client
import io
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mnistlab.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
OUT = "results/bench/serve-load.txt"
TARGETS = {"single_p50_ms": 10, "requests_per_s": 150, "p99_ms": 250, "rss_growth_mb": 50}
BOUNDARY = "mnistlabloadtest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and every process under it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The parent is the 2nd field after the command, which may hold spaces: split
            # after its closing parenthesis.
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_mb(pid: int) -> tuple[float, int]:
    """Resident memory summed over a process and its descendants, and how many there are."""
    total, count = 0.0, 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:
            continue  # gone meanwhile
        for line in lines:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
                count += 1
    return total, count


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def random_strokes(rng: np.random.Generator, size: int) -> Image.Image:
    """Pen strokes on white, as the page's canvas holds them."""
    image = Image.new("RGB", (size, size), "white")
    low, high = size * 3 // 14, size * 11 // 14
    points = [tuple(p) for p in rng.integers(low, high, size=(int(rng.integers(3, 7)), 2))]
    ImageDraw.Draw(image).line(points, fill="black", width=18, joint="curve")
    return image


def page_bodies(count: int, seed: int = 0) -> list[bytes]:
    """What the page posts while drawing: {"image": "data:image/png;base64,..."}, 280x280."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        url = "data:image/png;base64," + base64.b64encode(png(random_strokes(rng, 280))).decode()
        bodies.append(json.dumps({"image": url}).encode())
    return bodies


def upload_body(data: bytes) -> bytes:
    """A multipart/form-data body with the file in field "file", as `curl -F` sends."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"'
        "\r\nContent-Type: image/png\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


JSON = {"Content-Type": "application/json"}
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def start_server(port: int, serve_args: list[str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    command = [sys.executable, "-m", "mnistlab", "serve", "--port", str(port), *serve_args]
    # A session of its own, so that stopping it reaches the worker processes too.
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with status {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/model")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    stop_server(server)
    raise RuntimeError("server did not answer within 120 s")


def stop_server(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    except ProcessLookupError:
        pass


def run_clients(
    port: int, bodies: list[bytes], headers: dict, clients: int, deadline: float
) -> dict:
    """Send every body once from `clients` threads, each on one kept-alive connection."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    queue = iter(range(len(bodies)))

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                index = next(queue, None)
            if index is None:
                break
            if time.monotonic() > deadline:
                with lock:
                    errors.append("not sent: the run's deadline passed")
                continue
            start = time.perf_counter()
            try:
                connection.request("POST", "/api/predict", bodies[index], headers)
                response = connection.getresponse()
                text = response.read()
                problem = None
                if response.status != 200 or "digit" not in json.loads(text):
                    problem = f"{response.status}: {text[:100]!r}"
            except (OSError, http.client.HTTPException, ValueError) as e:
                problem = repr(e)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if problem:
                    errors.append(problem)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies or [float("nan")]) * 1000
    return {
        "requests": len(bodies),
        "clients": clients,
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
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(r: dict) -> str:
    """The text file: what ran, where, the numbers and the targets."""
    single, page, rss, t = r["single"], r["page"], r["rss_mb"], TARGETS
    lat = page["latency_ms"]
    growth = r["rss_growth_mb"]
    return "\n".join(
        [
            f"mnistlab serve under load, loopback: {r['server']}",
            f"machine: {r['cpu']}, {r['cpus']} cores; Python {r['python']}",
            f"load average (1 min) before / after: {r['load_average_before']} / "
            f"{r['load_average_after']} (other work on the same cores slows every number)",
            "",
            f"one client, 300x300 PNG upload, {single['requests']} requests one at a time:",
            f"  latency p50 / p90 / p99: {single['latency_ms']['p50']} / "
            f"{single['latency_ms']['p90']} / {single['latency_ms']['p99']} ms, "
            f"errors {single['errors']}",
            f"  target p50 <= {t['single_p50_ms']} ms: "
            f"{verdict(single['latency_ms']['p50'] <= t['single_p50_ms'])}",
            "",
            f"{page['clients']} clients, {page['requests']} requests, the page's drawings "
            "(280x280 PNG data URLs in JSON, saliency in every answer):",
            f"  {page['requests_per_s']} requests/s ({page['wall_s']} s), errors "
            f"{page['errors']}, latency p50 / p90 / p99 / max: {lat['p50']} / {lat['p90']} / "
            f"{lat['p99']} / {lat['max']} ms",
            f"  targets >= {t['requests_per_s']} requests/s: "
            f"{verdict(page['requests_per_s'] >= t['requests_per_s'])}; p99 <= "
            f"{t['p99_ms']} ms: {verdict(lat['p99'] <= t['p99_ms'])}; 0 errors: "
            f"{verdict(page['errors'] == 0)}",
            "",
            f"resident memory summed over the server's {r['server_processes']} processes: "
            f"{rss['started']} MB started, {rss['after_warmup']} MB after "
            f"{r['warmup']} warm-up requests, {rss['after_last']} MB after the last",
            f"  growth from the warm-up to the last request: {growth} MB; target <= "
            f"{t['rss_growth_mb']} MB: {verdict(growth <= t['rss_growth_mb'])}",
            "",
            f"command: {r['command']}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=500, help="page requests in all (500)")
    p.add_argument("--clients", type=int, default=16, help="concurrent page clients (16)")
    p.add_argument("--single", type=int, default=200, help="one-client uploads (200)")
    p.add_argument("--warmup", type=int, default=50, help="untimed page requests first (50)")
    p.add_argument("--serve-args", default="", help='options for serve, e.g. "--workers 1"')
    p.add_argument("--deadline", type=float, default=600, help="seconds the run may take (600)")
    p.add_argument("--out", default=OUT, help=f"text report ({OUT})")
    p.add_argument("--json", default=None, help="also the numbers as JSON to this file")
    args = p.parse_args(argv)

    deadline = time.monotonic() + args.deadline
    serve_args = shlex.split(args.serve_args)
    single_body = upload_body(png(random_strokes(np.random.default_rng(1), 300)))
    bodies = page_bodies(args.warmup + args.requests)
    port = free_port()
    load_before = os.getloadavg()[0]
    server = start_server(port, serve_args)
    try:
        rss: dict[str, float] = {"started": rss_mb(server.pid)[0]}
        run_clients(port, bodies[: args.warmup], JSON, args.clients, deadline)
        rss["after_warmup"] = rss_mb(server.pid)[0]
        single = run_clients(port, [single_body] * args.single, MULTIPART, 1, deadline)
        page = run_clients(port, bodies[args.warmup :], JSON, args.clients, deadline)
        rss["after_last"], processes = rss_mb(server.pid)
    finally:
        stop_server(server)
    command = "python benchmarks/load_serve.py"
    if argv is None:
        command = shlex.join(["python", "benchmarks/load_serve.py", *sys.argv[1:]])
    result = {
        "server": shlex.join(["mnistlab", "serve", *serve_args])
        + (" (default workers and threads)" if not serve_args else ""),
        "server_processes": processes,
        "single": single,
        "page": page,
        "warmup": args.warmup,
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "rss_growth_mb": round(rss["after_last"] - rss["after_warmup"], 1),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "command": command,
    }
    text = report(result)
    print(text, end="")
    atomic_write_text(Path(args.out), text)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
    return 0 if single["errors"] == 0 and page["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
