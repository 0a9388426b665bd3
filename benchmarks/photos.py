"""Accuracy of `mnistlab predict`'s preprocessing on MNIST digits rendered as photos.

    python benchmarks/photos.py --split test --per-condition 300 --out results/photos/test.json

Tune on `--split train`, report on `--split test`. Writes one JSON file: accuracy per condition
(see photo_conditions for what each condition draws), and with --examples DIR one PNG per
condition with what the model saw beside it.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import photo_conditions as photos  # noqa: E402  (the generator lives beside the tests)

from mnistlab.data.datasets import load_split
from mnistlab.errors import MnistlabError
from mnistlab.fileio import atomic_write_text
from mnistlab.inference import preprocess
from mnistlab.inference.classify import checkpoint_path
from mnistlab.runs.rundir import load_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--per-condition", type=int, default=300, help="digits per condition")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conditions", nargs="+", default=list(photos.CONDITIONS))
    p.add_argument("--checkpoint", default=None, help="default: the shipped model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="JSON result file")
    p.add_argument("--examples", default=None, metavar="DIR", help="write a sample per condition")
    return p.parse_args(argv)


def sample(split: str, n: int, seed: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_split("mnist", train=split == "train", root=data_dir)
    order = np.random.default_rng(seed).permutation(len(labels))[:n]
    return images.numpy()[order], labels.numpy()[order]


def write_examples(folder: Path, digit: np.ndarray, seed: int) -> None:
    """One PNG per condition: the rendered photo, and beside it the 28x28 the model saw."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, condition in enumerate(photos.CONDITIONS):
        image = photos.render(digit, condition, (seed, number, 0))
        try:
            seen = preprocess.mnist_style(preprocess.to_grayscale(image))
        except MnistlabError:
            seen = np.zeros((28, 28), dtype=np.float32)
        side = image.height
        small = Image.fromarray(np.round(seen * 255).astype(np.uint8)).resize(
            (side, side), Image.Resampling.NEAREST
        )
        sheet = Image.new("RGB", (image.width + side + 8, side), "white")
        sheet.paste(image, (0, 0))
        sheet.paste(small.convert("RGB"), (image.width + 8, 0))
        sheet.save(folder / f"{condition}.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model, meta = load_model(checkpoint_path(args.checkpoint))
        digits, labels = sample(args.split, args.per_condition, args.seed, args.data_dir)
    except MnistlabError as e:
        print(f"photos: error: {e}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    scores = photos.score(model, meta, digits, labels, args.conditions, args.seed)
    elapsed = time.perf_counter() - start
    for condition, row in scores.items():
        print(f"{condition:10s} {row['accuracy']:6.2f}%  ({row['correct']}/{row['n']})")
    result = {
        "split": args.split,
        "per_condition": args.per_condition,
        "seed": args.seed,
        "checkpoint": str(args.checkpoint or "shipped"),
        "model": meta.get("model_name"),
        "seconds": round(elapsed, 1),
        "python": platform.python_version(),
        "conditions": scores,
    }
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    if args.examples:
        write_examples(Path(args.examples), digits[0], args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
