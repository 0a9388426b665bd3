"""Validation runs that chose the time-to-accuracy recipes (experiments/fast-99.toml, fast-994).

Each variant is a base recipe with some keys changed, trained on 50,000 training images and
scored on the 10,000 held out (val_size = 10000, test = "never": the test set is not read),
at one thread, into results/fast-val/<variant>/seed<N>. Finished runs are read, not retrained;
checkpoints and weights are dropped (the committed runs keep run.json, config.toml and
metrics.jsonl). Seconds here are one-thread seconds on a shared machine: a rough guide, not a
timing for the record (`mnistlab bench --time-to` is that).

    python benchmarks/fast_val.py VARIANT [VARIANT ...] [--seeds 1,2]
    python benchmarks/fast_val.py --table
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from mnistlab.config import dumps_toml, from_dict, to_dict
from mnistlab.runs.rundir import is_run_dir, read_info, read_metrics

RESULTS = Path("results/fast-val")
VALIDATION = {"val_size": 10000, "test": "never"}

# The peer's recipe (experiments/peer-fast.toml) on the validation split.
PEER = {
    "model": "peer_fast",
    "epochs": 1,
    "batch_size": 256,
    "channels_last": False,
    "shuffle": "once",
    "optimizer": {"name": "adam", "lr": 0.01, "betas": [0.7, 0.9]},
    "scheduler": {"name": "onecycle", "max_lr": 0.01, "cycle_momentum": False},
}


def variant(base: dict, **changes) -> dict:
    """`base` with dotted keys changed: variant(PEER, **{"optimizer.lr": 0.02})."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in changes.items():
        *tables, leaf = key.split(".")
        node = data
        for table in tables:
            node = node.setdefault(table, {})
        node[leaf] = value
    return data


AUG = {"augment.rotation": 7.0, "augment.translate": 0.05}
VARIANTS: dict[str, dict] = {
    # one epoch: the fast-99 candidates
    "peer-1ep": PEER,
    "peer-1ep-bf16": variant(PEER, precision="bf16"),
    "peer-1ep-cl": variant(PEER, channels_last=True),
    "poolbn-1ep": variant(PEER, model="pool_bn"),
    "poolbn-small-1ep": variant(PEER, model="pool_bn_small"),
    # this tool's speed levers on top: channels_last, bf16 where the CPU has it natively
    "poolbn-1ep-levers": variant(PEER, model="pool_bn", channels_last=True, precision="auto"),
    # several epochs with augmentation: the fast-994 candidates
    "poolbn-8ep-aug-levers": variant(
        PEER,
        model="pool_bn",
        epochs=8,
        shuffle="every-epoch",
        channels_last=True,
        precision="auto",
        **AUG,
    ),
}
# Twice the optimizer steps for the same images.
VARIANTS["poolbn-8ep-aug-levers-b128"] = variant(VARIANTS["poolbn-8ep-aug-levers"], batch_size=128)


def run_dir(name: str, seed: int) -> Path:
    return RESULTS / name / f"seed{seed}"


def train(name: str, seed: int) -> None:
    out = run_dir(name, seed)
    if is_run_dir(out) and read_info(out).get("finished") is True:
        return
    cfg = from_dict({**variant(VARIANTS[name], **VALIDATION), "name": name, "seed": seed})
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / f"{name}.toml"
        toml.write_text(dumps_toml(to_dict(cfg)))
        command = [sys.executable, "-m", "mnistlab", "train", str(toml), "--out", str(out)]
        subprocess.run(command + ["--threads", "1", "--quiet"], check=True)
    for heavy in ("checkpoint.pt", "model.pt"):
        (out / heavy).unlink(missing_ok=True)


def table() -> str:
    lines = [f"{'variant':<30}{'seed':>5}{'val acc':>9}{'train s':>9}  (1 thread, shared machine)"]
    for name in VARIANTS:
        for out in sorted((RESULTS / name).glob("seed*")):
            metrics = read_metrics(out)
            seconds = sum(m["seconds"] for m in metrics)
            lines.append(
                f"{name:<30}{out.name[4:]:>5}{metrics[-1]['val_acc']:>9.2f}{seconds:>9.1f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="*", metavar="VARIANT")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]}; choose from {', '.join(VARIANTS)}")
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.variants:
            train(name, seed)
    if args.table or not args.variants:
        print(table())


if __name__ == "__main__":
    main()
