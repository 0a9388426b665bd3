#!/usr/bin/env bash
# One pass over everything CUDA touches, for a machine with a GPU (CI has none):
# the device-parametrised tests, a full 15-epoch run of the seed notebook's recipe, the final
# experiment with seeds 1-3, and `mnistlab bench seed`. Runs go one at a time, so each
# metrics file's seconds are the GPU's alone.
#
#   benchmarks/cuda_check.sh DATA_DIR OUT_DIR     (uses $PYTHON, default python3)
#
# The final experiment is the one src/mnistlab/weights/final.json names. The committed
# results/cuda came from this script when 09-deep was the final experiment
# (EXPERIMENT=experiments/09-deep.toml gives that pass again).
#
# Runs are written as <experiment>/cuda-<threads>t/seed<N>, the layout of results/, and each
# is packed as OUT_DIR/<experiment>-cuda-<threads>t-seed<N>.tgz as soon as it finishes.
set -u -o pipefail
data=$1
out=$2
python=${PYTHON:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MNISTLAB_DATA=$data
final=$($python -c "import json; print(json.load(open('src/mnistlab/weights/final.json'))['experiment'])")
experiment=${EXPERIMENT:-experiments/$final.toml}
threads=$($python -c "import torch; print(torch.get_num_threads())")
work=$(mktemp -d)

nvidia-smi -L
$python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
$python -m pytest -o addopts= -q -p no:cacheprovider tests/test_train.py tests/test_bench.py -k cuda

run() {  # run EXPERIMENT_FILE SEED: train into $work/<experiment>/cuda-<threads>t/seed<SEED>
    local rel
    rel=$(basename "$1" .toml)/cuda-${threads}t/seed$2
    $python -m mnistlab train "$1" --seed "$2" --device cuda --out "$work/$rel" --quiet
    tar czf "$out/${rel//\//-}.tgz" -C "$work" "$rel"
}
run experiments/seed.toml 1
for seed in 1 2 3; do
    run "$experiment" "$seed"
done
$python -m mnistlab bench seed --device cuda --batches 200 --rounds 3 \
    --out "$out/bench-seed-cuda.json"
