#!/usr/bin/env bash
# Side-by-side training-step benchmark: `mae bench step` against the official PyTorch
# model (tools/bench_pytorch_step.py, same recipe and flags), run back to back in
# rounds so that every pair shares the machine's minute (it is shared and noisy;
# compare within a round only). Prints one line per run and, per configuration,
# the ratio of each round and the median ratio.
#
# usage: tools/bench-step.sh [ROUNDS]
# environment: TORCH_PYTHON (default /work/torchvenv/bin/python), CONFIGS (default
# "mae_vit_tiny_patch4:64:1:8 mae_vit_tiny_patch4:64:2:8 mae_vit_base_patch16:8:1:3
# mae_vit_base_patch16:8:2:3", MODEL:BATCH:THREADS:STEPS), EXTRA (flags for both, default
# --norm-pix-loss; e.g. "--norm-pix-loss --precision bf16" compares our bf16 with PyTorch's
# autocast), OURS_EXTRA (flags for ours only, e.g. "--batch-shards 1").
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
python=${TORCH_PYTHON:-/work/torchvenv/bin/python}
configs=${CONFIGS:-"mae_vit_tiny_patch4:64:1:8 mae_vit_tiny_patch4:64:2:8 mae_vit_base_patch16:8:1:3 mae_vit_base_patch16:8:2:3"}
extra=${EXTRA:---norm-pix-loss}
ours_extra=${OURS_EXTRA:-}

swift build -c release --product mae >&2
# Peer ratios differ by vendor (PyTorch's MKL is fast on Intel, slow on AMD): name the CPU
# and the kernels each side runs. Benchmark with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset.
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') ($(grep -m1 vendor_id /proc/cpuinfo | sed 's/.*: //'))," \
     "$(nproc) cores; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}"
echo "ours: $(.build/release/mae bench step --steps 1 --batch 1 | grep -o 'OpenBLAS [0-9.]* core=[A-Za-z0-9]*')"
echo "PyTorch: $("$python" -c 'import torch; print(torch.__version__, "BLAS", torch.backends.mkl.is_available() and "MKL" or "other", "ISA", torch.backends.cpu.get_cpu_capability())')"
rate() { grep -o 'img_per_s=[0-9.]*' | tail -1 | cut -d= -f2; }
memory() { grep -o 'peak_rss_mb=[0-9.]*' | tail -1 | cut -d= -f2; }

for config in $configs; do
    IFS=: read -r model batch threads steps <<<"$config"
    ratios=()
    for round in $(seq "$rounds"); do
        # shellcheck disable=SC2086
        ours=$(.build/release/mae bench step --model "$model" --batch "$batch" --threads "$threads" --steps "$steps" $extra $ours_extra)
        # shellcheck disable=SC2086
        peer=$("$python" tools/bench_pytorch_step.py --model "$model" --batch "$batch" --threads "$threads" --steps "$steps" $extra)
        ratio=$(awk -v a="$(rate <<<"$ours")" -v b="$(rate <<<"$peer")" 'BEGIN { printf "%.2f", a / b }')
        ratios+=("$ratio")
        echo "$(date -u +%H:%M) $model batch $batch threads $threads round $round: ours $(rate <<<"$ours") img/s" \
             "($(memory <<<"$ours") MB), PyTorch $(rate <<<"$peer") img/s ($(memory <<<"$peer") MB), ratio $ratio" \
             "load $(cut -d' ' -f1 /proc/loadavg)"
    done
    median=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    echo "== $model batch $batch threads $threads: ratios ${ratios[*]}, median $median"
done
