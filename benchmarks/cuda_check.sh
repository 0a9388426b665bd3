#!/usr/bin/env bash
# One pass over everything CUDA touches, for a machine with a GPU (CI has none):
# the device-parametrised tests, a full 15-epoch run of the seed notebook's recipe, the final
# experiment with seeds 1-3, and `mnistlab bench seed`. Runs go one at a time, so each
# metrics file's seconds are the GPU's alone.
#
#   benchmarks/cuda_check.sh DATA_DIR OUT_DIR     (uses $PYTHON, default python3)
#
# The committed results/cuda came from this script when 09-deep was the final experiment
# (EXPERIMENT=experiments/09-deep.toml gives that pass again).
#
# Each run directory is packed as OUT_DIR/<name>.tgz as soon as it finishes.
set -u -o pipefail
data=$1
out=$2
python=${PYTHON:-python3}
experiment=${EXPERIMENT:-experiments/19-thin-stem.toml}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MNISTLAB_DATA=$data
work=$(mktemp -d)

nvidia-smi -L
$python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
$python -m pytest -o addopts= -q -p no:cacheprovider tests/test_train.py tests/test_bench.py -k cuda

run() {  # run NAME ARGS...: train into $work/NAME, then pack it
    local name=$1
    shift
    $python -m mnistlab train "$@" --device cuda --out "$work/$name" --quiet
    tar czf "$out/$name.tgz" -C "$work" "$name"
}
run seed-cuda experiments/seed.toml
for seed in 1 2 3; do
    run "$(basename "$experiment" .toml)-cuda-seed$seed" "$experiment" --seed "$seed"
done
$python -m mnistlab bench seed --device cuda --batches 200 --rounds 3 \
    --out "$out/bench-seed-cuda.json"
