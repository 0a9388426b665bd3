"""Accuracy of `mnistlab predict`'s preprocessing on digits in photos, and on real handwriting.

    python benchmarks/photos.py --split test --per-condition 300 --out results/photos/test.json
    python benchmarks/photos.py --handwriting report --out results/photos/handwriting-report.json
    python benchmarks/photos.py --table results/photos/table.md \\
        now=results/photos/test.json tuning=results/photos/train.json

Photo conditions: MNIST digits rendered as photos (tests/photo_conditions.py says what each
condition draws). Tune on `--split train`, report on `--split test`.

Real handwriting: the digits in tests/fixtures/handwriting (not from MNIST; its README says
where they come from). `--handwriting tune` is the part tuning looked at, `report` the rest.
Each is read as `mnistlab predict` reads a file and scored through the preprocessing and,
for comparison, through a plain crop (ink bounding box, longer side to 20 px, centre of mass on
the centre), with the same model.

Each run writes one JSON file: accuracy, the images got wrong, the preprocessing time per image
(ms), and the machine it ran on (CPU, cores, load average before and after: on a shared machine
the timings depend on the load, the accuracy does not). `--table` turns result files into the
Markdown table docs/photos.md includes; with --examples DIR a run also writes one PNG per
condition with what the model saw beside it.
"""

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

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
    p.add_argument(
        "--handwriting",
        choices=["tune", "report", "all"],
        default=None,
        help="score the real handwriting set (this part of it) instead of the photo conditions",
    )
    p.add_argument(
        "--timing",
        action="store_true",
        help="time the preprocessing on a few fixed photos (best and median of many) instead",
    )
    p.add_argument("--checkpoint", default=None, help="default: the shipped model")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="JSON result file")
    p.add_argument("--examples", default=None, metavar="DIR", help="write a sample per condition")
    p.add_argument(
        "--table",
        default=None,
        metavar="FILE",
        help="write a Markdown table of the result files given as LABEL=FILE, and run nothing",
    )
    p.add_argument("columns", nargs="*", metavar="LABEL=FILE", help="for --table")
    return p.parse_args(argv)


def sample(split: str, n: int, seed: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_split("mnist", train=split == "train", root=data_dir)
    order = np.random.default_rng(seed).permutation(len(labels))[:n]
    return images.numpy()[order], labels.numpy()[order]


def machine() -> dict[str, Any]:
    """What the timings ran on: the CPU, its cores, and how busy it was."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": load_average()}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not on every platform
        return None


def plain_crop(gray: np.ndarray) -> np.ndarray:
    """The simplest MNIST-style input: ink = darkness stretched to 0..1, cropped to the pixels
    above 20% of it, longer side to 20 px, centre of mass on the centre. No background, line
    or component handling: a baseline for clean scans."""
    ink = float(gray.max()) - gray
    if float(ink.max()) <= 0:
        raise MnistlabError("blank image")
    return preprocess.place_centred(preprocess.fit_box(preprocess.crop_to_ink(ink / ink.max())))


def score_handwriting(model, meta, part: str) -> dict[str, Any]:
    files, labels = photos.handwriting(part)
    grays = [preprocess.read_grayscale(path) for path in files]
    result = {}
    for name, prepare in (("preprocess", preprocess.mnist_style), ("plain_crop", plain_crop)):
        row = photos.score_grays(model, meta, grays, labels, prepare)
        row["wrong"] = [f"{files[i].stem} read as {read}" for i, read in row["wrong"]]
        result[name] = row
    return result


def timing(digit: np.ndarray, repeats: int = 50) -> dict[str, Any]:
    """Preprocessing time (ms) on fixed photos: the best of `repeats` runs (the cost with the
    least interference from other work on the machine) and their median."""
    import io

    clean = photos.render(digit, "clean", (0, 0, 0)).resize((300, 300))
    buffer = io.BytesIO()
    clean.save(buffer, "PNG")
    png = buffer.getvalue()
    squared = photos.squared_page(digit, np.random.default_rng(0), 1200, 12)
    cases = {
        "300x300 PNG, decoded and preprocessed": lambda: preprocess.mnist_style(
            preprocess.grayscale_from_bytes(png)
        ),
        "300x300 photo, preprocessed": partial(
            preprocess.mnist_style, preprocess.to_grayscale(clean)
        ),
        "1200 px squared paper, preprocessed": partial(
            preprocess.mnist_style, preprocess.to_grayscale(squared)
        ),
    }
    result = {}
    for name, run in cases.items():
        run()  # warm: first-call costs are not the steady state
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            times.append(1000 * (time.perf_counter() - start))
        result[name] = {"best": round(min(times), 2), "median": round(float(np.median(times)), 2)}
    return result


def write_examples(folder: Path, digits: np.ndarray, seed: int) -> None:
    """One PNG per condition: the rendered photo, and beside it the 28x28 the model saw."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, condition in enumerate(photos.CONDITIONS):
        image = photos.render(digits[0], condition, (seed, number, 0), digits[1:])
        try:
            seen = preprocess.mnist_style(preprocess.to_grayscale(image))
        except MnistlabError:
            seen = np.zeros((28, 28), dtype=np.float32)
        if max(image.size) > 420:  # large photos shown at the size of the others
            image.thumbnail((420, 420), Image.Resampling.LANCZOS)
        side = image.height
        small = Image.fromarray(np.round(seen * 255).astype(np.uint8)).resize(
            (side, side), Image.Resampling.NEAREST
        )
        sheet = Image.new("RGB", (image.width + side + 8, side), "white")
        sheet.paste(image, (0, 0))
        sheet.paste(small.convert("RGB"), (image.width + 8, 0))
        sheet.save(folder / f"{condition}.png")


def table(columns: list[str]) -> str:
    """A Markdown table: one row per condition, one column per LABEL=FILE result."""
    loaded = []
    for column in columns:
        label, _, name = column.partition("=")
        result = json.loads(Path(name).read_text())
        loaded.append((label, result))
    if any("handwriting" in result for _, result in loaded):
        return handwriting_table(loaded)
    if any("timing" in result for _, result in loaded):
        return timing_table(loaded)
    conditions = list(dict.fromkeys(c for _, r in loaded for c in r["conditions"]))
    header = ["condition"] + [
        f"{label} ({r['split']}, {r['per_condition']} digits)" for label, r in loaded
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    ceiling = [result.get("as_mnist") for _, result in loaded]
    if any(ceiling):
        cells = [f"{r['accuracy']:.2f} ({r['correct']}/{r['n']})" if r else "" for r in ceiling]
        lines.append("| *MNIST image as is* | " + " | ".join(cells) + " |")
    for condition in conditions:
        cells = [condition]
        for _, result in loaded:
            row = result["conditions"].get(condition)
            cells.append(f"{row['accuracy']:.2f} ({row['correct']}/{row['n']})" if row else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", footer(loaded)]
    return "\n".join(lines) + "\n"


def handwriting_table(loaded: list[tuple[str, dict]]) -> str:
    header = ["part", "images", "preprocessing (%)", "plain crop (%)", "read wrong"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, result in loaded:
        ours, plain = result["handwriting"]["preprocess"], result["handwriting"]["plain_crop"]
        wrong = ", ".join(ours["wrong"]) or "none"
        lines.append(
            f"| {label} | {ours['n']} | {ours['accuracy']:.2f} ({ours['correct']}/{ours['n']}) "
            f"| {plain['accuracy']:.2f} ({plain['correct']}/{plain['n']}) | {wrong} |"
        )
    lines += ["", footer(loaded)]
    return "\n".join(lines) + "\n"


def timing_table(loaded: list[tuple[str, dict]]) -> str:
    cases = list(dict.fromkeys(case for _, r in loaded for case in r["timing"]))
    header = ["photo"] + [f"{label}: best / median (ms)" for label, _ in loaded]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for case in cases:
        cells = [case]
        for _, result in loaded:
            row = result["timing"].get(case)
            cells.append(f"{row['best']:.2f} / {row['median']:.2f}" if row else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", footer(loaded)]
    return "\n".join(lines) + "\n"


def footer(loaded: list[tuple[str, dict]]) -> str:
    """Where each column's run ran, and its preprocessing time per image."""
    notes = []
    for label, result in loaded:
        info = result.get("machine")
        if not info:
            notes.append(f"{label}: not recorded")
            continue
        load = info.get("load_average")
        note = f"{label}: {info['cpu']}, {info['cores']} cores"
        note += f", load average {load[0]:.2f} at the start" if load else ""
        times = [row["ms_per_image"]["median"] for row in rows(result)]
        if times:
            low, high = min(times), max(times)
            span = f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}"
            note += f", median {span} ms per image"
        notes.append(note)
    return "Ran on " + "; ".join(notes) + "."


def rows(result: dict) -> list[dict]:
    if "timing" in result:
        return []
    if "handwriting" in result:
        return [result["handwriting"]["preprocess"]]
    return list(result["conditions"].values())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        atomic_write_text(Path(args.table), table(args.columns))
        return 0
    try:
        model, meta = load_model(checkpoint_path(args.checkpoint))
        if args.handwriting is None and not args.timing:
            digits, labels = sample(args.split, args.per_condition, args.seed, args.data_dir)
    except MnistlabError as e:
        print(f"photos: error: {e}", file=sys.stderr)
        return 1
    result: dict[str, Any] = {"machine": machine()}
    start = time.perf_counter()
    if args.timing:
        digits, _ = sample("test", 1, args.seed, args.data_dir)
        result["timing"] = timing(digits[0])
        for name, row in result["timing"].items():
            print(f"{name:40s} best {row['best']:.2f} ms, median {row['median']:.2f} ms")
    elif args.handwriting:
        result["part"] = args.handwriting
        result["handwriting"] = score_handwriting(model, meta, args.handwriting)
        for name, row in result["handwriting"].items():
            print(
                f"{name:10s} {row['accuracy']:6.2f}%  ({row['correct']}/{row['n']})  {row['wrong']}"
            )
    else:
        result |= {"split": args.split, "per_condition": args.per_condition, "seed": args.seed}
        # The ceiling: the model on the same digits as MNIST has them, no photo, no preprocessing.
        result["as_mnist"] = photos.score_grays(
            model, meta, list(digits.astype(np.float32) / 255), labels, preprocess.as_28x28
        )
        result["conditions"] = photos.score(model, meta, digits, labels, args.conditions, args.seed)
        for condition, row in result["conditions"].items():
            print(
                f"{condition:12s} {row['accuracy']:6.2f}%  ({row['correct']}/{row['n']})  "
                f"{row['ms_per_image']['median']:.1f} ms"
            )
    result |= {
        "checkpoint": str(args.checkpoint or "shipped"),
        "model": meta.get("model_name"),
        "seconds": round(time.perf_counter() - start, 1),
        "load_average_after": load_average(),
        "python": platform.python_version(),
        "opencv": opencv_version(),
    }
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    if args.examples and args.handwriting is None and not args.timing:
        write_examples(Path(args.examples), digits, args.seed)
    return 0


def opencv_version() -> str | None:
    try:
        import cv2
    except ImportError:
        return None
    return cv2.__version__


if __name__ == "__main__":
    raise SystemExit(main())
