#!/usr/bin/env bash
# All-reduce across two "machines": two network namespaces joined by a veth pair, ranks 0–1
# in one and 2–3 in the other, `mae collective-worker --mode bench` (what `mae bench
# allreduce` runs) with --transport ring (the flat TCP ring over 4 ranks, which crosses the
# link twice) and --transport hierarchical (shared memory inside each namespace, a TCP ring
# per local rank across). The link is unshaped, then shaped by tc (tbf) to each RATE in turn,
# as tools/bench-overlap.sh does. Each configuration runs ROUNDS times, the transports
# interleaved; the script prints every run's rank-0 result lines and then, per configuration,
# the best (shortest) time of each transport and their ratio, and the same for rank 0's CPU
# time per all-reduce (all threads, user + system: the work a byte costs, which a busy shared
# machine distorts less than wall time).
#
# usage: sudo tools/bench-hierarchical.sh [ROUNDS]   (namespaces need root)
# environment: ITERS (default 3), SIZES (floats, default "6175000 27925000": 24.7 and 111.7 MB),
#   RATES (default "10gbit 1gbit"), MAE (a built mae binary instead of .build/release/mae).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
iters=${ITERS:-3}
sizes=${SIZES:-"6175000 27925000"}
rates=${RATES:-"10gbit 1gbit"}
if [ -n "${MAE:-}" ]; then
    mae=$MAE
else
    swift build -c release --product mae >&2
    mae=$PWD/.build/release/mae
fi
[ "$(id -u)" = 0 ] || { echo "bench-hierarchical.sh: network namespaces need root" >&2; exit 1; }
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores"

suffix=$$
source tools/two-machines.sh   # (the working directory is the repository root)
logs=$(mktemp -d)
pids=()
machines=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    remove_two_machines
    rm -rf "$logs"
}
trap cleanup EXIT
make_two_machines maeHA hA 10.232.0

# One benchmark of 4 ranks; prints rank 0's last line (busbw_GBps=… algbw_GBps=… time_ms=…).
run() {
    local transport=$1 floats=$2 port=$((20000 + RANDOM % 20000)) rank side
    pids=()
    for rank in 0 1 2 3; do
        side=$((rank / 2))
        ip netns exec "${machines[$side]}" "$mae" collective-worker --backend tcp --mode bench --transport "$transport" \
            --rank "$rank" --world 4 --address "${addresses[0]}:$port" --token "bench-$suffix-$port" --timeout 120 \
            --floats "$floats" --iters "$iters" > "$logs/$rank.log" 2>&1 &
        pids+=($!)
    done
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    pids=()
    if [ "$failed" = 1 ]; then echo "failed: $(cat "$logs"/*.log | tail -5 | tr '\n' ' ')"; return; fi
    grep -h -e '^rank0_collective=' -e '^rank0_cpu_ms_per_iteration=' "$logs/0.log" | tr '\n' ' ' || true
    grep -h '^busbw_GBps=' "$logs/0.log" | tail -1 || true
}

results=$logs/results
for rate in unshaped $rates; do
    shape_link "$rate"
    for floats in $sizes; do
        for round in $(seq "$rounds"); do
            for transport in ring hierarchical; do
                line=$(run "$transport" "$floats")
                echo "link $rate floats $floats $transport round $round: $line"
                echo "$rate $floats $transport $(echo "$line" | grep -o 'time_ms=[0-9.]*' | cut -d= -f2)" \
                    "$(echo "$line" | grep -o 'cpu_ms_per_iteration=[0-9.]*' | cut -d= -f2)" >>"$results"
            done
        done
    done
done

echo "# best (shortest) wall and rank-0 CPU time per all-reduce over $rounds rounds of $iters iterations;"
echo "# ratio = ring / hierarchical"
echo "link floats MB ring_ms hierarchical_ms ratio ring_cpu_ms hierarchical_cpu_ms cpu_ratio"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print (a != "" && b != "") ? sprintf("%.2f", a / b) : "n/a" }'; }
for rate in unshaped $rates; do
    for floats in $sizes; do
        # best TRANSPORT COLUMN: the smallest value of that column (4: wall, 5: CPU).
        best() { awk -v r="$rate" -v f="$floats" -v t="$1" -v c="$2" '$1 == r && $2 == f && $3 == t && $c != "" { print $c }' "$results" | sort -g | head -1; }
        ring=$(best ring 4); hierarchical=$(best hierarchical 4)
        ring_cpu=$(best ring 5); hierarchical_cpu=$(best hierarchical 5)
        echo "$rate $floats $(awk -v f="$floats" 'BEGIN { printf "%.1f", f * 4 / 1e6 }') $ring $hierarchical" \
             "$(ratio "$ring" "$hierarchical") $ring_cpu $hierarchical_cpu $(ratio "$ring_cpu" "$hierarchical_cpu")"
    done
done
