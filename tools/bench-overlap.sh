#!/usr/bin/env bash
# Exposed communication of a training step (the time a step waits for the gradient
# all-reduce after its backward) with and without overlap, by `mae bench step --world N`:
#   1. WORLD ranks on this machine (--transport auto: shared memory);
#   2. two "machines" (network namespaces joined by a veth pair) of two ranks each, over
#      each of TRANSPORTS (the flat TCP ring, or hierarchical: shared memory inside each
#      namespace, a TCP ring per local rank across), the link shaped by tc (tbf) to each RATE
#      in turn (and unshaped).
# Each configuration runs ROUNDS times, overlap off and on back to back; the script prints
# every run's last lines (median step and exposed communication over its steps, and the
# parameters' checksum, which must be the same with and without overlap).
# The kernel here has no netem, so no delay is emulated: a real link's latency adds to
# every ring step, which overlap hides as well.
#
# usage: sudo tools/bench-overlap.sh [ROUNDS]   (namespaces need root; 1. runs without)
# environment: MODEL (default mae_vit_tiny_patch4), BATCH (16), STEPS (6), WORLD (4),
#   BUCKET_MB (4: mae_vit_tiny_patch4 has 24.7 MB of gradients, one bucket at 25),
#   RATES ("1gbit 10gbit"), TRANSPORTS ("ring"; "ring hierarchical" compares them), SKIP_LOCAL /
#   SKIP_NAMESPACES (set to skip), MAE (a built mae binary to use instead of building
#   .build/release/mae).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
model=${MODEL:-mae_vit_tiny_patch4}
batch=${BATCH:-16}
steps=${STEPS:-6}
world=${WORLD:-4}
bucket=${BUCKET_MB:-4}
rates=${RATES:-"1gbit 10gbit"}
transports=${TRANSPORTS:-ring}
if [ -n "${MAE:-}" ]; then
    mae=$MAE
else
    swift build -c release --product mae >&2
    mae=$PWD/.build/release/mae
fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores;" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}"
common=(bench step --model "$model" --batch "$batch" --steps "$steps" --threads 1 --bucket-mb "$bucket")
summary() { grep -E '^(world|parameters_fnv1a64|img_per_s)' | tr '\n' ' '; echo; }

if [ -z "${SKIP_LOCAL:-}" ]; then
    for round in $(seq "$rounds"); do
        for overlap in off on; do
            echo "local world $world overlap $overlap round $round: $("$mae" "${common[@]}" --world "$world" --overlap "$overlap" | summary)"
        done
    done
fi

[ -n "${SKIP_NAMESPACES:-}" ] && exit 0
[ "$(id -u)" = 0 ] || { echo "namespaces need root; skipped" >&2; exit 0; }
suffix=$$
source tools/two-machines.sh   # (the working directory is the repository root)
machines=()
trap remove_two_machines EXIT
make_two_machines maeA vA 10.231.0

# Ranks 0 and 1 on machine A, 2 and 3 on machine B: the ring crosses the link twice.
run_two_machines() {
    local transport=$1 overlap=$2 port=$((20000 + RANDOM % 20000)) pids=() rank side
    for rank in 0 1 2 3; do
        side=$((rank / 2))
        ip netns exec "${machines[$side]}" "$mae" "${common[@]}" --world 4 --rank "$rank" --transport "$transport" \
            --overlap "$overlap" --rendezvous "${addresses[0]}:$port" --listen-host "${addresses[$side]}" \
            > "/tmp/bench-overlap-$suffix-$rank.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    summary < "/tmp/bench-overlap-$suffix-0.log"
    rm -f /tmp/bench-overlap-$suffix-*.log
}

for rate in unshaped $rates; do
    shape_link "$rate"
    for round in $(seq "$rounds"); do
        for transport in $transports; do
            for overlap in off on; do
                echo "two machines x 2 ranks, $transport, link $rate, overlap $overlap round $round:" \
                     "$(run_two_machines "$transport" "$overlap")"
            done
        done
    done
done
