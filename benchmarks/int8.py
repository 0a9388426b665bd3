"""The shipped model as fp32 and int8 ONNX files: test accuracy through ONNX Runtime, file
sizes, and how often the two agree. Writes a text report:

    python benchmarks/int8.py --out results/bench/int8.txt
"""

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

import mnistlab as ml
from mnistlab.data.datasets import load_split
from mnistlab.device import cpu_info
from mnistlab.inference.onnxfile import OnnxModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="final", help="run dir or weights (default: final)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cpu = cpu_info()
    lines = [
        f"# {cpu['model']} ({', '.join(cpu['flags'])}), load average {os.getloadavg()[0]:.2f}",
        f"model: {args.checkpoint}; test set: all 10,000 images, through ONNX Runtime",
    ]
    images, labels = load_split("mnist", False)
    x = images.numpy().astype(np.float32) / 255
    with tempfile.TemporaryDirectory() as tmp:
        preds = {}
        for name, int8 in (("fp32", False), ("int8", True)):
            path = ml.export(args.checkpoint, Path(tmp) / f"{name}.onnx", int8=int8)
            model = OnnxModel(path)
            preds[name] = model.probabilities(x).argmax(1)
            accuracy = 100 * (preds[name] == labels.numpy()).mean()
            size = path.stat().st_size
            lines.append(f"{name}: test accuracy {accuracy:.2f}%, {size:,} bytes")
            if int8:
                lines.append(f"  calibration: {model.meta['calibration']}")
    same = int((preds["fp32"] == preds["int8"]).sum())
    lines.append(f"int8 and fp32 give the same class on {same:,} of {len(x):,} test images")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
