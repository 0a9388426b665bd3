"""A deployment without torch, proven in a fresh virtual environment.

Creates a venv holding only mnistlab itself (installed with --no-deps) and the packages of
its `inference` and `web` extras, checks that torch cannot be imported there, then runs
`mnistlab predict --checkpoint FILE.onnx` on the example digits and `mnistlab serve` with it
(one drawing posted, the model info read). Writes what it saw:

    python benchmarks/no_torch.py digits-int8.onnx --out results/bench/no-torch.txt

(export the file first: `mnistlab export --format onnx --int8 --out digits-int8.onnx`).
"""

import argparse
import base64
import json
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extra_packages(names: list[str]) -> list[str]:
    """The requirements of pyproject's extras `names`, mnistlab[...] references followed."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    packages: list[str] = []
    for name in names:
        for requirement in extras[name]:
            nested = requirement.startswith("mnistlab[")
            for package in (
                extra_packages(requirement[9:-1].split(",")) if nested else [requirement]
            ):
                if package not in packages:
                    packages.append(package)
    return packages


def run(command: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, **options)


def serve_once(mnistlab: Path, onnx: Path, image: Path) -> tuple[dict, dict, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(mnistlab), "serve", "--checkpoint", str(onnx), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/model", timeout=5) as response:
                    info = json.load(response)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start:\n{server.stdout.read()}") from None
                time.sleep(0.3)
        url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
        request = urllib.request.Request(
            f"{base}/api/predict",
            data=json.dumps({"image": url}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    return info, answer, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="an exported .onnx file")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    onnx = args.onnx.resolve()
    digits = sorted(p for p in (ROOT / "examples" / "digits").iterdir() if p.suffix != ".py")
    packages = extra_packages(["inference", "web"])
    lines = [f"extras inference + web: {', '.join(packages)}"]
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, *packages], check=True)
        subprocess.run([*pip, "--no-deps", str(ROOT)], check=True)
        python, mnistlab = venv / "bin" / "python", venv / "bin" / "mnistlab"
        probe = run([str(python), "-c", "import torch"])
        lines.append(f"import torch in the new environment: exit status {probe.returncode}")
        if probe.returncode == 0:
            raise SystemExit("torch is importable in the new environment; nothing is proven")
        done = run([str(mnistlab), "predict", "--checkpoint", str(onnx), *map(str, digits)])
        lines.append(f"mnistlab predict --checkpoint {onnx.name} (exit status {done.returncode}):")
        lines += ["  " + line.replace(str(ROOT) + "/", "") for line in done.stdout.splitlines()]
        lines += ["  " + line for line in done.stderr.splitlines()]
        info, answer, log = serve_once(mnistlab, onnx, digits[0])
        lines.append(
            f"mnistlab serve --checkpoint {onnx.name}: /api/model says saliency: "
            f"{info['saliency']!r}; {digits[0].name} answered {answer['name']} "
            f"({max(answer['probabilities']):.3f}); traceback in the log: {'Traceback' in log}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
