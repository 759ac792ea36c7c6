#!/usr/bin/env bash
# Trains MAE with N local worker processes that exchange gradients over a TCP ring
# (or under mpirun with --backend mpi). Installs missing Debian packages (as root),
# builds, makes the built-in demo dataset when no --data is given, starts the
# workers, and stops them all if one fails or on Ctrl-C (each writes a checkpoint
# first on a graceful stop).
#
# usage: ./launch.sh [--nodes N] [--backend tcp|mpi] [--data ROOT] [--run-dir DIR]
#                    [--threads T] [worker flags ...]
# Every flag this script does not know is passed to each mae-worker unchanged
# (see `.build/release/mae-worker --help`), e.g. --epochs 10 --resume auto.
set -euo pipefail
cd "$(dirname "$0")"

nodes=4
backend=tcp
data=""
run_dir=""
threads=""
worker_flags=()
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes=${2:?--nodes needs a value}; shift 2 ;;
        --backend) backend=${2:?--backend needs tcp or mpi}; shift 2 ;;
        --data) data=${2:?--data needs a folder}; shift 2 ;;
        --run-dir) run_dir=${2:?--run-dir needs a folder}; shift 2 ;;
        --threads) threads=${2:?--threads needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) worker_flags+=("$1"); shift ;;
    esac
done
case "$nodes" in ''|*[!0-9]*|0) echo "launch.sh: --nodes must be a positive integer, got '$nodes'" >&2; exit 2 ;; esac
case "$backend" in tcp|mpi) ;; *) echo "launch.sh: --backend must be tcp or mpi, got '$backend'" >&2; exit 2 ;; esac

# Dependencies and build.
# The MPI build has its own folder (as in tools/test.sh), so switching between the
# backends does not rebuild everything each time.
if [ "$backend" = mpi ]; then
    tools/install-deps.sh --mpi
    swift build -c release --traits MPI --scratch-path .build/mpi
    bin=.build/mpi/release
else
    tools/install-deps.sh
    swift build -c release
    bin=.build/release
fi

# Data: the built-in demo dataset unless --data is given.
if [ -z "$data" ]; then
    data=runs/demo-data
    if [ ! -f "$data/.complete" ]; then
        echo "Making the demo dataset in $data ..."
        rm -rf "$data"
        "$bin/mae" synth-data "$data" --classes 10 --per-class 200 --size 64 --seed 0
        touch "$data/.complete"
    fi
    # Demo recipe: a tiny model for a few epochs, unless the user says otherwise.
    has() { local flag; for flag in "${worker_flags[@]+"${worker_flags[@]}"}"; do [ "$flag" = "$1" ] && return 0; done; return 1; }
    # The value after FLAG in the worker flags (empty when absent).
    value_of() { local previous="" flag; for flag in "${worker_flags[@]+"${worker_flags[@]}"}"; do
        [ "$previous" = "$1" ] && { echo "$flag"; return; }; previous=$flag; done; }
    has --model || worker_flags+=(--model mae_vit_tiny_patch4)
    has --epochs || worker_flags+=(--epochs 5)
    # One warm-up epoch, or none when the run has only one epoch.
    [ "$(value_of --epochs)" = 1 ] && warmup=0 || warmup=1
    has --warmup-epochs || worker_flags+=(--warmup-epochs "$warmup")
    has --batch-size || worker_flags+=(--batch-size 32)
fi
[ -n "$run_dir" ] || run_dir=runs/run-$(date +%Y%m%d-%H%M%S)
mkdir -p "$run_dir"

job_token=$(od -An -tx8 -N16 /dev/urandom | tr -d ' \n')
common=(--data "$data" --run-dir "$run_dir" --world-size "$nodes")
# Without --threads each worker takes its share of this machine's cores.
[ -z "$threads" ] || common+=(--threads "$threads")

if [ "$backend" = mpi ]; then
    exec mpirun --allow-run-as-root --oversubscribe --mca btl tcp,self -np "$nodes" \
        "$bin/mae-worker" --backend mpi "${common[@]}" "${worker_flags[@]+"${worker_flags[@]}"}"
fi

# A free port for the rendezvous that rank 0 hosts.
port=""
for _ in $(seq 1 50); do
    candidate=$(( 29500 + RANDOM % 2000 ))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$candidate) 2>/dev/null; then port=$candidate; break; fi
done
[ -n "$port" ] || { echo "launch.sh: found no free port for the rendezvous" >&2; exit 1; }

echo "Run directory: $run_dir (logs of ranks > 0 in $run_dir/rank-*.log)"
pids=()
stop_all() {
    local signal=$1
    for pid in "${pids[@]}"; do kill -"$signal" "$pid" 2>/dev/null || true; done
}
trap 'echo "launch.sh: stopping workers (they checkpoint first)"; stop_all TERM' INT TERM
for rank in $(seq 0 $(( nodes - 1 ))); do
    flags=("${common[@]}" --rank "$rank" --rendezvous "127.0.0.1:$port" --job-token "$job_token"
           "${worker_flags[@]+"${worker_flags[@]}"}")
    if [ "$rank" -eq 0 ]; then
        "$bin/mae-worker" "${flags[@]}" &
    else
        "$bin/mae-worker" "${flags[@]}" >"$run_dir/rank-$rank.log" 2>&1 &
    fi
    pids+=($!)
done

# Wait for all; if any worker fails, stop the others so none waits on a dead peer.
# (bash reaps finished children itself, so `kill -0` fails once a worker has exited,
# and `wait PID` then returns its saved status.)
status=0
alive=("${pids[@]}")
while [ ${#alive[@]} -gt 0 ]; do
    still=()
    for pid in "${alive[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then still+=("$pid"); continue; fi
        set +e; wait "$pid"; code=$?; set -e
        if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
            status=$code
            echo "launch.sh: a worker exited with status $code; stopping the others" >&2
            stop_all TERM
        fi
    done
    alive=("${still[@]+"${still[@]}"}")
    [ ${#alive[@]} -eq 0 ] || sleep 0.5
done
exit "$status"
