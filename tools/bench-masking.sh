#!/usr/bin/env bash
# The paper's claim that encoding only the visible patches makes pretraining faster
# (its Table 2: "encoder w/ [M]" against the encoder on visible patches): `mae bench step`
# at mask ratio 0.75 against mask ratio 0, where the encoder sees every patch. At ratio 0
# the encoder and the decoder run on all L tokens, the shapes of an encoder fed mask
# tokens, so the compute is that row's. Run back to back in rounds (the machine is shared;
# compare within a round). Prints each run and, per model, each round's ratio.
#
# usage: tools/bench-masking.sh [ROUNDS]
# environment: CONFIGS (default "mae_vit_tiny_patch4:64:2:8 mae_vit_base_patch16:8:2:3",
# MODEL:BATCH:THREADS:STEPS).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
configs=${CONFIGS:-"mae_vit_tiny_patch4:64:2:8 mae_vit_base_patch16:8:2:3"}
swift build -c release --product mae >&2
field() { grep -o "$1=[0-9.]*" | tail -1 | cut -d= -f2; }
for config in $configs; do
    IFS=: read -r model batch threads steps <<<"$config"
    for round in $(seq "$rounds"); do
        line=""
        for ratio in 0.75 0; do
            # OpenBLAS picks its own kernels for this CPU: no inherited core type or cache size.
            out=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .build/release/mae bench step --model "$model" \
                --batch "$batch" --threads "$threads" --steps "$steps" --mask-ratio "$ratio" --norm-pix-loss)
            rate=$(field img_per_s <<<"$out"); cpu=$(field cpu_ms_per_step <<<"$out"); step=$(field step_ms <<<"$out")
            echo "$model batch $batch threads $threads mask_ratio $ratio: img_per_s=$rate step_ms=$step cpu_ms_per_step=$cpu"
            line="$line $rate $cpu"
        done
        read -r masked_rate masked_cpu full_rate full_cpu <<<"$line"
        echo "$model round $round: speed-up $(echo "scale=2; $masked_rate / $full_rate" | bc) (wall), $(echo "scale=2; $full_cpu / $masked_cpu" | bc) (cpu time)"
    done
done
