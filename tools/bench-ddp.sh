#!/usr/bin/env bash
# End to end, side by side in one run: `launch.sh --nodes N` (coordinator, agent, N workers
# reading JPEG files from disk) against PyTorch DDP over Gloo on the official model
# (tools/bench_pytorch_ddp.py, random tensors in memory), same model, per-worker batch and
# threads, back to back in each round. Ours: the median of the per-step throughput that
# metrics.jsonl logs (all workers), first step left out; theirs: the median step after one
# warm-up step. Prints one line per round and the median ratio.
#
# usage: tools/bench-ddp.sh [ROUNDS]
# environment: MODEL (default mae_vit_base_patch16), NODES (2), BATCH (4, per worker),
# THREADS (1, per worker), STEPS (5 timed steps each), TORCH_PYTHON (/work/torchvenv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
model=${MODEL:-mae_vit_base_patch16}
nodes=${NODES:-2}
batch=${BATCH:-4}
threads=${THREADS:-1}
steps=${STEPS:-5}
python=${TORCH_PYTHON:-/work/torchvenv/bin/python}

swift build -c release >&2
side=$(.build/release/mae bench step --model "$model" --steps 1 --batch 1 | grep -o 'image [0-9]*' | head -1 | cut -d' ' -f2)
# Enough JPEG files at the model's size for one epoch of steps + 1 steps.
data=runs/bench-ddp-data-$side
if [ ! -f "$data/.complete" ]; then
    rm -rf "$data"
    .build/release/mae synth-data "$data" --classes 2 --per-class $(( (nodes * batch * (steps + 1) + 1) / 2 + batch )) \
        --size "$side" --seed 0 >&2
    touch "$data/.complete"
fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores; $model at $side px, $nodes workers," \
     "batch $batch per worker, $threads thread(s) each, $steps timed steps"
ratios=()
for round in $(seq "$rounds"); do
    run_dir=runs/bench-ddp-$$-$round
    ./launch.sh --nodes "$nodes" --data "$data" --model "$model" --batch-size "$batch" --threads "$threads" \
        --epochs 1 --warmup-epochs 0 --max-steps $((steps + 1)) --print-every 1 --run-dir "$run_dir" > "$run_dir.log" 2>&1 \
        || { echo "launch.sh failed; see $run_dir.log" >&2; exit 1; }
    ours=$(python3 -c '
import json, statistics, sys
rates = [json.loads(line)["images_per_second"] for line in open(sys.argv[1]) if "images_per_second" in line]
print("%.2f" % statistics.median(rates[1:]))' "$run_dir/metrics.jsonl")
    rm -rf "$run_dir" "$run_dir.log"
    theirs=$("$python" tools/bench_pytorch_ddp.py --model "$model" --workers "$nodes" --batch "$batch" \
        --threads "$threads" --steps "$steps" | grep -o 'img_per_s=[0-9.]*' | cut -d= -f2)
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
    ratios+=("$ratio")
    echo "$(date -u +%H:%M) round $round: ours (launch.sh) $ours img/s, PyTorch DDP/Gloo $theirs img/s, ratio $ratio," \
         "load $(cut -d' ' -f1 /proc/loadavg)"
done
echo "median ratio: $(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')"
