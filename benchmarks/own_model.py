"""A user's own logits network through the API, as a PyTorch user writes it (torchvision style):
conv 1->16 3x3, ReLU, max-pool 2, conv 16->32 3x3, ReLU, max-pool 2, Linear(800, 10).

Trains it with the default recipe (the seed notebook's: SGD 0.01, momentum 0.9, batch 64) on
the first 10,000 training images for 2 epochs, per seed, tests on all 10,000 test images, and
checks its ONNX export against ml.predict on every test image. With --recipes, seed 1 also
trains under a few other recipes, for comparison. Writes a text report:

    python benchmarks/own_model.py --seeds 1 2 3 --recipes --out results/own-model/criterion.txt
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import mnistlab as ml
from mnistlab.device import cpu_info


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Linear(32 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # logits


RECIPES = {  # seed 1 only: what else 2 epochs on 10,000 images reach
    "sgd lr 0.05": dict(optimizer={"lr": 0.05}),
    "sgd onecycle max_lr 0.05": dict(scheduler={"name": "onecycle", "max_lr": 0.05}),
    "sgd onecycle max_lr 0.1, batch 32": dict(
        batch_size=32, scheduler={"name": "onecycle", "max_lr": 0.1}
    ),
    "adam lr 1e-3": dict(optimizer={"name": "adam", "lr": 1e-3}),
    "adam onecycle max_lr 3e-3": dict(
        optimizer={"name": "adam"}, scheduler={"name": "onecycle", "max_lr": 3e-3}
    ),
}


def onnx_check(result: ml.TrainResult, folder: Path) -> str:
    """ONNX Runtime's class and probabilities against ml.predict's on every test image."""
    import onnx
    import onnxruntime as ort

    path = ml.export(result, folder / "net.onnx")
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    test = ml.load_data("mnist", "test")
    x = (test.images.float() / 255 - float(meta["mean"])) / float(meta["std"])
    (out,) = session.run(None, {"image": x.unsqueeze(1).numpy()})
    probs = torch.softmax(torch.from_numpy(out), dim=1).numpy()
    predicted = ml.predict(test.images, model=result, preprocess=False)
    same = int((probs.argmax(1) == predicted.labels).sum())
    largest = float(np.abs(probs - predicted.probabilities).max())
    name = session.get_outputs()[0].name
    return (
        f"ONNX (output {name!r}): same class as ml.predict on {same:,} of {len(test):,} test "
        f"images; largest probability difference {largest:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recipes", action="store_true", help="also the other recipes, seed 1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = [
        f"# {cpu_info()['model']} ({', '.join(cpu_info()['flags'])}), torch {torch.__version__}, "
        f"{args.threads} threads, load average at start {os.getloadavg()[0]:.2f}",
        "net: conv 1->16 3x3, ReLU, pool, conv 16->32 3x3, ReLU, pool, Linear(800, 10), logits",
        "2 epochs on the first 10,000 training images; test accuracy on all 10,000 test images",
    ]
    runs = [(f"default recipe, seed {s}", s, {}) for s in args.seeds]
    if args.recipes:
        runs += [(name, 1, options) for name, options in RECIPES.items()]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, seed, options) in enumerate(runs):
            started = time.perf_counter()
            result = ml.train(
                Net,
                epochs=2,
                limit_train=10_000,
                seed=seed,
                out=Path(tmp) / f"run{i}",
                threads=args.threads,
                progress=False,
                console=False,
                **options,
            )
            epochs = ", ".join(f"{r['test_acc']:.2f}" for r in result.metrics)
            line = (
                f"{name}: test accuracy by epoch {epochs}% ({time.perf_counter() - started:.0f} s)"
            )
            lines.append(line)
            print(line, flush=True)
            if i == 0:
                lines.append(onnx_check(result, Path(tmp)))
                print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
