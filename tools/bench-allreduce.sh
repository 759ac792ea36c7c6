#!/usr/bin/env bash
# Side-by-side all-reduce benchmark over loopback, float32, one run: PyTorch's Gloo,
# Open MPI's own MPI_Allreduce (TCP and shared memory), our shared-memory transport,
# our TCP ring and our MPI backend, at the float counts of shared/reference/MEASURED.md. Each configuration
# runs ROUNDS times, the tools interleaved, and the median busbw is reported
# (the machine is shared and noisy; compare within one run only).
#
# usage: tools/bench-allreduce.sh [ROUNDS]
# environment: ITERS (default 5), TORCH_PYTHON (default /work/torchvenv/bin/python; Gloo is
# skipped when missing), BENCH_DIR (default /work/shared/bench), CONFIGS (default
# "2:6175000 4:6175000 2:27925000 4:27925000", WORLD:FLOATS).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
iters=${ITERS:-5}
python=${TORCH_PYTHON:-/work/torchvenv/bin/python}
bench=${BENCH_DIR:-/work/shared/bench}
configs=${CONFIGS:-"2:6175000 4:6175000 2:27925000 4:27925000"}

swift build -c release --traits MPI --product mae --scratch-path .build/mpi >&2
mae=.build/mpi/release/mae
# Peer ratios differ by vendor: name the CPU this run measured.
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') ($(grep -m1 vendor_id /proc/cpuinfo | sed 's/.*: //')), $(nproc) cores"
mpicc -O2 -o /tmp/mae_mpi_allreduce_bench "$bench/mpi_allreduce_bench.c"
mpirun=(mpirun --allow-run-as-root --oversubscribe)
busbw() { grep -o 'busbw_GBps=[0-9.]*' | tail -1 | cut -d= -f2; }

results=$(mktemp)
for config in $configs; do
    world=${config%%:*}; floats=${config##*:}
    for round in $(seq "$rounds"); do
        if [ -x "$python" ]; then
            echo "gloo $world $floats $("$python" "$bench/gloo_allreduce_bench.py" "$world" "$floats" "$iters" 2>/dev/null | busbw)" >>"$results"
        fi
        echo "openmpi-tcp $world $floats $("${mpirun[@]}" -np "$world" --mca btl tcp,self /tmp/mae_mpi_allreduce_bench "$floats" "$iters" | busbw)" >>"$results"
        echo "openmpi-shm $world $floats $("${mpirun[@]}" -np "$world" --mca btl vader,self /tmp/mae_mpi_allreduce_bench "$floats" "$iters" | busbw)" >>"$results"
        echo "ours-shm $world $floats $("$mae" bench allreduce --transport shm --world "$world" --floats "$floats" --iters "$iters" | busbw)" >>"$results"
        echo "ours-tcp-ring $world $floats $("$mae" bench allreduce --transport ring --world "$world" --floats "$floats" --iters "$iters" | busbw)" >>"$results"
        echo "ours-tcp-ring-system-cc $world $floats $("$mae" bench allreduce --transport ring --congestion-control system --world "$world" --floats "$floats" --iters "$iters" | busbw)" >>"$results"
        echo "ours-mpi-tcp $world $floats $("$mae" bench allreduce --backend mpi --mpi-btl tcp,self --world "$world" --floats "$floats" --iters "$iters" | busbw)" >>"$results"
        tail -7 "$results" >&2
    done
done
echo "# median busbw (GB/s) over $rounds rounds, $iters iterations each; all values: $results"
echo "tool world floats bytes median_busbw_GBps"
cut -d' ' -f1-3 "$results" | sort -u -k2,2n -k3,3n -k1,1 | while read -r tool world floats; do
    values=$(awk -v t="$tool" -v w="$world" -v f="$floats" '$1 == t && $2 == w && $3 == f && $4 != "" { print $4 }' "$results" | sort -g)
    count=$(echo "$values" | grep -c . || true)
    median=$(echo "$values" | awk -v n="$count" 'NR == int((n + 1) / 2) { a = $1 } NR == int(n / 2) + 1 { b = $1 } END { if (n) printf "%.3f", (n % 2) ? a : (a + b) / 2; else printf "n/a" }')
    echo "$tool $world $floats $(awk -v f="$floats" 'BEGIN { printf "%.1fMB", f * 4 / 1e6 }') $median"
done
