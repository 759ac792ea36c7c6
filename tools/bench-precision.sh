#!/usr/bin/env bash
# Side-by-side training-step benchmark of the two precisions: `mae bench step --precision fp32`
# and `--precision bf16` against the official PyTorch model in fp32 and under
# torch.autocast("cpu", dtype=torch.bfloat16) (tools/bench_pytorch_step.py), the four back to back
# in each round so that they share the machine's minute. Prints one line per round, with that
# round's ours bf16 / PyTorch bf16, and, per configuration, the best of the rounds with the
# ratios the issue asks for and the median of the rounds' bf16 ratios.
#
# usage: tools/bench-precision.sh [ROUNDS]
# environment: TORCH_PYTHON (default /work/torchvenv/bin/python), CONFIGS (default
# "mae_vit_tiny_patch4:64:1:5 mae_vit_tiny_patch4:64:2:5 mae_vit_base_patch16:8:1:2
# mae_vit_base_patch16:8:2:2", MODEL:BATCH:THREADS:STEPS), EXTRA (flags for all, default
# --norm-pix-loss). OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset for the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
python=${TORCH_PYTHON:-/work/torchvenv/bin/python}
configs=${CONFIGS:-"mae_vit_tiny_patch4:64:1:5 mae_vit_tiny_patch4:64:2:5 mae_vit_base_patch16:8:1:2 mae_vit_base_patch16:8:2:2"}
extra=${EXTRA:---norm-pix-loss}

swift build -c release --product mae >&2
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') ($(grep -m1 vendor_id /proc/cpuinfo | sed 's/.*: //')," \
     "$(grep -o -m1 avx512_bf16 /proc/cpuinfo || echo 'no avx512_bf16')), $(nproc) cores"
echo "ours: $(.build/release/mae bench step --steps 1 --batch 1 | grep -o 'OpenBLAS [0-9.]* core=[A-Za-z0-9]*'), oneDNN $(dpkg-query -W -f='${Version}' libdnnl2 2>/dev/null)"
echo "PyTorch: $("$python" -c 'import torch; print(torch.__version__, "ISA", torch.backends.cpu.get_cpu_capability())')"
clean=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
field() { grep -o "$1=[0-9.]*" | tail -1 | cut -d= -f2; }

for config in $configs; do
    IFS=: read -r model batch threads steps <<<"$config"
    declare -A best=() memory=() rate=()
    round_ratios=()
    for round in $(seq "$rounds"); do
        line="$(date -u +%H:%M) $model batch $batch threads $threads round $round:"
        for run in ours-fp32 ours-bf16 torch-fp32 torch-bf16; do
            precision=${run#*-}
            # shellcheck disable=SC2086
            if [ "${run%-*}" = ours ]; then
                output=$("${clean[@]}" .build/release/mae bench step --model "$model" --batch "$batch" --threads "$threads" \
                         --steps "$steps" --precision "$precision" $extra)
            else
                output=$("${clean[@]}" "$python" tools/bench_pytorch_step.py --model "$model" --batch "$batch" \
                         --threads "$threads" --steps "$steps" --precision "$precision" $extra)
            fi
            rate[$run]=$(field img_per_s <<<"$output")
            memory[$run]=$(field peak_rss_mb <<<"$output")
            best[$run]=$(awk -v a="${rate[$run]}" -v b="${best[$run]:-0}" 'BEGIN { print (a > b) ? a : b }')
            line+=" $run ${rate[$run]} img/s (${memory[$run]} MB)"
        done
        # The round's own ratio: the four runs shared the machine's minute, so the ratio drifts
        # less than the rates do from round to round.
        round_ratios+=("$(awk -v a="${rate[ours-bf16]}" -v b="${rate[torch-bf16]}" 'BEGIN { printf "%.2f", a / b }')")
        echo "$line, ours bf16 / PyTorch bf16 ${round_ratios[-1]}, load $(cut -d' ' -f1 /proc/loadavg)"
    done
    median=$(printf '%s\n' "${round_ratios[@]}" | sort -n | awk '{ value[NR] = $1 } END {
        printf "%.2f", NR % 2 ? value[(NR + 1) / 2] : (value[NR / 2] + value[NR / 2 + 1]) / 2 }')
    ratio() { awk -v a="${best[$1]}" -v b="${best[$2]}" 'BEGIN { printf "%.2f", a / b }'; }
    echo "== $model batch $batch threads $threads, best of $rounds: ours fp32 ${best[ours-fp32]}, ours bf16" \
         "${best[ours-bf16]}, PyTorch fp32 ${best[torch-fp32]}, PyTorch bf16 ${best[torch-bf16]} img/s;" \
         "ours bf16 / PyTorch bf16 $(ratio ours-bf16 torch-bf16), ours bf16 / ours fp32 $(ratio ours-bf16 ours-fp32)," \
         "ours fp32 / PyTorch fp32 $(ratio ours-fp32 torch-fp32); median of the rounds' ours bf16 / PyTorch bf16" \
         "$median (${round_ratios[*]})"
    unset best memory rate
done
