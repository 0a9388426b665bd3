#!/usr/bin/env bash
# The final experiment's 15 epochs, compiled, at an older commit (default f8c4dcd) and at this
# checkout, interleaved (old, new, old, new, ...) so that drift in the machine's load hits
# both alike. Each side trains from its own checkout (src/ and experiments/), in a process of
# its own, with an empty compile cache of its own for every run: the cold start a fresh clone
# pays. Prints per run and per side: training seconds (the runs' epoch seconds; evaluation is
# not in them), first epoch (where the compiling is), mean of the later epochs, final test
# accuracy; with OUT=file also writes that table there.
#
#   benchmarks/compare_commits.sh                      # 1 round: about 8 minutes at 2 threads
#   ROUNDS=2 THREADS=2 OUT=results/bench/compare-commits.txt benchmarks/compare_commits.sh
#   OLD=248bfd4 EPOCHS=2 COMPILE=0 EXPERIMENT=$PWD/benchmarks/house/net.toml benchmarks/compare_commits.sh
set -euo pipefail

OLD=${OLD:-f8c4dcd}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-2}
EXPERIMENT=${EXPERIMENT:-experiments/19-thin-stem.toml}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-}
EPOCHS=${EPOCHS:-}  # fewer epochs: a smoke test, or a check that two commits train alike
COMPILE=${COMPILE:-1}  # 0: train eagerly (no C++ compiler, no compile time)

here=$(git rev-parse --show-toplevel)
case "$PYTHON" in /*) ;; *) PYTHON="$here/$PYTHON" ;; esac
epochs=()
if [ -n "$EPOCHS" ]; then epochs=(--epochs "$EPOCHS"); fi
compile=()
if [ "$COMPILE" = 1 ]; then compile=(--compile); fi
cd "$here"
work=$(mktemp -d)
cleanup() {
    git worktree remove --force "$work/old" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
git worktree add --quiet --detach "$work/old" "$OLD"

for round in $(seq 1 "$ROUNDS"); do
    for side in old new; do
        if [ "$side" = old ]; then root="$work/old"; else root="$here"; fi
        cache="$work/cache/$side-$round"  # empty: this run compiles from scratch
        mkdir -p "$cache"
        echo "round $round: $side ($(git -C "$root" rev-parse --short HEAD))" >&2
        (cd "$root" && TORCHINDUCTOR_CACHE_DIR="$cache" PYTHONPATH="$root/src" \
            "$PYTHON" -m mnistlab train "$EXPERIMENT" "${epochs[@]}" "${compile[@]}" \
            --threads "$THREADS" --device cpu --quiet --out "$work/runs/$side-$round" \
            > "$work/$side-$round.log")
    done
done

"$PYTHON" - "$work/runs" "$OLD" "$(git rev-parse --short HEAD)" "$THREADS" "$EXPERIMENT" \
    "$COMPILE" > "$work/table.txt" <<'PY'
import json
import sys
from pathlib import Path

runs, old, new, threads, experiment, compiled = Path(sys.argv[1]), *sys.argv[2:]
how = "compiled, empty compile cache per run" if compiled == "1" else "eager"
print(f"{experiment}, {how}, {threads} threads, interleaved")
print(f"{'run':<14}{'commit':>9}{'train s':>9}{'epoch 1':>9}{'later':>8}{'test acc':>10}")
totals = {"old": [], "new": []}
for run in sorted(runs.iterdir(), key=lambda p: (int(p.name.split("-")[1]), not p.name.startswith("old"))):
    side = run.name.split("-")[0]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    seconds = [m["seconds"] for m in metrics]
    later = sum(seconds[1:]) / max(1, len(seconds) - 1)
    totals[side].append(sum(seconds))
    commit = old if side == "old" else new
    print(
        f"{run.name:<14}{commit:>9}{sum(seconds):>9.1f}{seconds[0]:>9.1f}{later:>8.1f}"
        f"{metrics[-1]['test_acc']:>10.2f}"
    )
for side, commit in (("old", old), ("new", new)):
    print(f"mean {side} ({commit}): {sum(totals[side]) / len(totals[side]):.1f} s of training")
print(f"new / old: {sum(totals['new']) / sum(totals['old']):.3f}x")
# The same recipe on the same machine must train alike: every number but the timings.
timing = ("seconds", "images_per_s")


def numbers(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in timing} for line in lines]


rounds = sorted({p.name.split("-")[1] for p in runs.iterdir()}, key=int)
same = [numbers(runs / f"old-{r}") == numbers(runs / f"new-{r}") for r in rounds]
print(f"identical metrics (all but timings), old vs new: {sum(same)} of {len(same)} rounds")
PY
cat "$work/table.txt"
if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    cp "$work/table.txt" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
    echo "wrote $OUT" >&2
fi
