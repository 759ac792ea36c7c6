#!/usr/bin/env bash
# Training throughput from JPEG files on disk (mae-worker) against the model alone on
# images in memory (mae bench step), same model, batch and threads, interleaved in one run.
# usage: tools/bench-training-from-disk.sh [THREADS=2] [BATCH=64] [STEPS=10] [ROUNDS=3]
# Needs release builds: swift build -c release
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}; batch=${2:-64}; steps=${3:-10}; rounds=${4:-3}
bin=.build/release
work=$(mktemp -d /tmp/mae-bench-disk.XXXXXX)
trap 'rm -rf "$work"' EXIT

# 2000 JPEG files of 64 px (about 8 MB): 31 batches of 64 per epoch, so no epoch ends in a round.
"$bin/mae" synth-data "$work/data" --classes 10 --per-class 200 --val-per-class 1 --size 64 --seed 1 >/dev/null

for round in $(seq 1 "$rounds"); do
    memory=$("$bin/mae" bench step --model mae_vit_tiny_patch4 --input-size 32 --batch "$batch" \
        --threads "$threads" --steps "$steps" | tail -1 | sed -E 's/.*img_per_s=([0-9.]+).*/\1/')
    "$bin/mae-worker" --standalone --data "$work/data" --model mae_vit_tiny_patch4 --input-size 32 \
        --batch-size "$batch" --epochs 100 --warmup-epochs 1 --threads "$threads" --max-steps $((steps + 1)) \
        --print-every 1 --run-dir "$work/run-$round" >/dev/null
    # Mean over the steps after the first (the warm-up), as mae bench step does.
    disk=$(python3 - "$work/run-$round/metrics.jsonl" "$batch" <<'PY'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
seconds = lines[-1]["elapsed_seconds"] - lines[0]["elapsed_seconds"]
waits = [line["data_wait_share"] for line in lines[1:]]
print(f"{(len(lines) - 1) * int(sys.argv[2]) / seconds:.2f} {100 * sum(waits) / len(waits):.2f}")
PY
)
    set -- $disk
    ratio=$(python3 -c "print(f'{$1 / $memory:.3f}')")
    echo "round $round: bench step $memory img/s, training from disk $1 img/s (data wait $2%), ratio $ratio"
done
