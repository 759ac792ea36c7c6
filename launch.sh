#!/usr/bin/env bash
# Trains MAE with N worker processes under a coordinator (mae-coordinator serve) that
# restarts the whole group from the newest checkpoint when a worker crashes, hangs or
# loses its machine. Installs missing Debian packages (as root), builds, makes the
# built-in demo dataset when no --data is given, starts the coordinator and one agent per
# machine (this one, or each host over ssh), and prints where to watch the run.
#
# usage: ./launch.sh [--nodes N] [--data ROOT] [--model NAME] [--run-dir DIR] [--threads T]
#                    [--max-restarts K] [--heartbeat-timeout S] [--port P] [--metrics-addr HOST:PORT]
#                    [--hosts H1[:K],H2[:K],...| --hostfile FILE] [--ssh CMD] [--coordinator-host ADDR]
#                    [--backend tcp|mpi] [--transport auto|ring|shm|hierarchical] [worker flags ...]
# Every flag this script does not know is passed to each mae-worker unchanged
# (see `.build/release/mae-worker --help`), e.g. --epochs 10 --resume auto, or
# --precision bf16 (bf16 matrix products with fp32 sums, on CPUs with AVX512_BF16); among them the
# gradient exchange's: --overlap auto|on|off (all-reduce bucket by bucket during the backward,
# default auto: on), --bucket-mb MB (25), --shard-optimizer (ZeRO stage 1); none changes the bits;
# --gradient-wire bf16 sends the gradients rounded to bf16 (half the bytes, summed in fp32), which does.
# Fine-tuning and linear probing of a pretrained encoder run the same way:
#   ./launch.sh --nodes 2 --task finetune --finetune RUN_DIR|CHECKPOINT [--data ROOT] ...
#   ./launch.sh --nodes 2 --task linprobe --finetune RUN_DIR|CHECKPOINT [--data ROOT] ...
# (ROOT needs train/ and val/; without --data the demo dataset, which has both).
# Exit status: 0 finished, 1 failed after the restarts ran out, 2 bad configuration,
# 3 stopped on request (Ctrl-C, SIGTERM, mae-coordinator stop; resumable with --resume auto).
# A coordinator killed by a signal or crashed is started again on the run directory (at most
# max(3, --max-restarts) times); the agents and workers train on and it adopts them.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(pwd)

nodes=""
backend=tcp
transport=auto
data=""
model=""
run_dir=""
finetune=""
threads=""
max_restarts=3
heartbeat_timeout=10
port=0
metrics_addr=127.0.0.1:0
hosts=""
hostfile=""
ssh_command=ssh
coordinator_host=""
worker_flags=()
# The comment block above, to its first line that is not a comment (no line numbers to keep up to date).
usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"; }
fail() { echo "launch.sh: $*" >&2; exit 2; }
# The value of the flag in $1, or a clear error when it is missing ($2 is the next argument).
value() { [ $# -ge 2 ] && [ -n "$2" ] && [ "${2#--}" = "$2" ] || fail "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) value "$@"; nodes=$2; shift 2 ;;
        --backend) value "$@"; backend=$2; shift 2 ;;
        --transport) value "$@"; transport=$2; shift 2 ;;
        --data) value "$@"; data=$2; shift 2 ;;
        --model) value "$@"; model=$2; shift 2 ;;
        --run-dir) value "$@"; run_dir=$2; shift 2 ;;
        --finetune) value "$@"; finetune=$2; shift 2 ;;
        --threads) value "$@"; threads=$2; shift 2 ;;
        --max-restarts) value "$@"; max_restarts=$2; shift 2 ;;
        --heartbeat-timeout) value "$@"; heartbeat_timeout=$2; shift 2 ;;
        --port) value "$@"; port=$2; shift 2 ;;
        --metrics-addr) value "$@"; metrics_addr=$2; shift 2 ;;
        --hosts) value "$@"; hosts=$2; shift 2 ;;
        --hostfile) value "$@"; hostfile=$2; shift 2 ;;
        --ssh) value "$@"; ssh_command=$2; shift 2 ;;
        --coordinator-host) value "$@"; coordinator_host=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) worker_flags+=("$1"); shift ;;
    esac
done

# Every check that needs no build, before anything starts or is written.
positive() { case "$2" in ''|*[!0-9]*|0) fail "$1 must be a positive integer, got '$2'" ;; esac; }
case "$backend" in tcp|mpi) ;; *) fail "--backend must be tcp or mpi, got '$backend'" ;; esac
case "$transport" in auto|ring|shm|hierarchical) ;; *) fail "--transport must be auto, ring, shm or hierarchical, got '$transport'" ;; esac
case "$max_restarts" in ''|*[!0-9]*) fail "--max-restarts must be an integer ≥ 0, got '$max_restarts'" ;; esac
case "$heartbeat_timeout" in ''|*[!0-9.]*|.|*.*.*) fail "--heartbeat-timeout must be a number of seconds, got '$heartbeat_timeout'" ;; esac
case "$port" in ''|*[!0-9]*) fail "--port must be a port number, got '$port'" ;; esac
[ "$port" -le 65535 ] || fail "--port must be at most 65535, got $port"
case "$metrics_addr" in *:*) ;; *) fail "--metrics-addr must be HOST:PORT, got '$metrics_addr'" ;; esac
[ -z "$threads" ] || positive --threads "$threads"
[ -z "$finetune" ] || [ -e "$finetune" ] || fail "--finetune $finetune does not exist (a pretraining checkpoint or run folder, or weights)"
[ -z "$data" ] || [ -d "$data" ] || fail "--data $data is not a folder (an ImageNet-style ROOT/train/<class>/<image>, or make one with 'mae synth-data')"
known_models=$(grep -o '"mae_vit_[a-z0-9_]*"' Sources/Model/ModelConfig.swift | tr -d '"' | awk '!seen[$0]++' | tr '\n' ' ')
if [ -n "$model" ]; then
    case " $known_models " in *" $model "*) ;; *) fail "--model $model is not one of: $known_models" ;; esac
fi
[ -z "$hosts" ] || [ -z "$hostfile" ] || fail "--hosts and --hostfile exclude each other"

# Placement: (host, slots) per machine; an empty host means this machine.
placement_hosts=()
placement_slots=()
if [ -n "$hostfile" ]; then
    [ -f "$hostfile" ] || fail "--hostfile $hostfile does not exist"
    while read -r line; do
        line=${line%%#*}
        set -- $line
        [ $# -gt 0 ] || continue
        slots=1
        for field in "${@:2}"; do case "$field" in slots=*) slots=${field#slots=} ;; esac; done
        positive "slots of $1 in $hostfile" "$slots"
        placement_hosts+=("$1"); placement_slots+=("$slots")
    done < "$hostfile"
    [ ${#placement_hosts[@]} -gt 0 ] || fail "--hostfile $hostfile lists no host"
elif [ -n "$hosts" ]; then
    IFS=, read -r -a entries <<< "$hosts"
    for entry in "${entries[@]}"; do
        [ -n "$entry" ] || fail "--hosts has an empty entry: '$hosts'"
        case "$entry" in *:*) positive "slots of ${entry%%:*}" "${entry##*:}"; placement_hosts+=("${entry%%:*}"); placement_slots+=("${entry##*:}") ;;
                         *) placement_hosts+=("$entry"); placement_slots+=(0) ;; esac
    done
fi
if [ ${#placement_hosts[@]} -gt 0 ]; then
    # Hosts without a slot count share what --nodes leaves evenly.
    given=0; unset_count=0
    for slots in "${placement_slots[@]}"; do [ "$slots" -eq 0 ] && unset_count=$((unset_count + 1)) || given=$((given + slots)); done
    if [ $unset_count -gt 0 ]; then
        [ -n "$nodes" ] || fail "--hosts without :SLOTS needs --nodes"
        positive --nodes "$nodes"
        rest=$((nodes - given))
        [ $rest -gt 0 ] && [ $((rest % unset_count)) -eq 0 ] || fail "--nodes $nodes does not divide evenly over the hosts without :SLOTS"
        for index in "${!placement_slots[@]}"; do [ "${placement_slots[$index]}" -eq 0 ] && placement_slots[$index]=$((rest / unset_count)); done
    fi
    total=0; for slots in "${placement_slots[@]}"; do total=$((total + slots)); done
    [ -z "$nodes" ] || [ "$nodes" -eq "$total" ] || fail "--nodes $nodes differs from the $total slots of the hosts"
    nodes=$total
else
    nodes=${nodes:-4}
    positive --nodes "$nodes"
    placement_hosts=(""); placement_slots=("$nodes")
fi
if [ "$backend" = mpi ] && [ -n "$hosts$hostfile" ]; then
    fail "--backend mpi runs mpirun on this machine only here; for several machines use mpirun --hostfile (cluster/README.md)"
fi

# Dependencies and build (MAE_BIN_DIR: use the executables already built there instead;
# the tests and clusters with a shared, prebuilt tree do).
if [ -n "${MAE_BIN_DIR:-}" ]; then
    bin=$MAE_BIN_DIR
    [ -x "$bin/mae-coordinator" ] && [ -x "$bin/mae-worker" ] || fail "MAE_BIN_DIR=$bin holds no built mae-coordinator and mae-worker"
elif [ "$backend" = mpi ]; then
    # The MPI build has its own folder (as in tools/test.sh), so switching between the
    # backends does not rebuild everything each time.
    tools/install-deps.sh --mpi
    swift build -c release --traits MPI --scratch-path .build/mpi
    bin=$repo/.build/mpi/release
else
    tools/install-deps.sh
    swift build -c release
    bin=$repo/.build/release
fi

# Data: the built-in demo dataset unless --data is given.
has() { local flag; for flag in "${worker_flags[@]+"${worker_flags[@]}"}"; do [ "$flag" = "$1" ] && return 0; done; return 1; }
value_of() { local previous="" flag; for flag in "${worker_flags[@]+"${worker_flags[@]}"}"; do
    [ "$previous" = "$1" ] && { echo "$flag"; return; }; previous=$flag; done; }
if [ -z "$data" ]; then
    data=runs/demo-data
    if [ ! -f "$data/.complete" ]; then
        echo "Making the demo dataset in $data ..."
        rm -rf "$data"
        "$bin/mae" synth-data "$data" --classes 10 --per-class 200 --size 64 --seed 0
        touch "$data/.complete"
    fi
    # Demo recipe: a tiny model for a few epochs, unless the user says otherwise.
    [ -n "$model" ] || model=mae_vit_tiny_patch4
    has --epochs || worker_flags+=(--epochs 5)
    # One warm-up epoch, or none when the run has only one epoch.
    [ "$(value_of --epochs)" = 1 ] && warmup=0 || warmup=1
    has --warmup-epochs || worker_flags+=(--warmup-epochs "$warmup")
    has --batch-size || worker_flags+=(--batch-size 32)
fi
[ -n "$run_dir" ] || run_dir=runs/run-$(date +%Y%m%d-%H%M%S)
case "$run_dir" in /*) ;; *) run_dir=$repo/$run_dir ;; esac
case "$data" in /*) ;; *) data=$repo/$data ;; esac
common=(--data "$data")
[ -z "$model" ] || common+=(--model "$model")
# Without --threads each worker takes its share of its machine's cores.
[ -z "$threads" ] || common+=(--threads "$threads")
# The pretrained encoder of --task finetune|linprobe, by an absolute path like --data (workers may start elsewhere).
if [ -n "$finetune" ]; then
    case "$finetune" in /*) ;; *) finetune=$repo/$finetune ;; esac
    common+=(--finetune "$finetune")
fi

# The coordinator listens on loopback for a run on this machine, else on this machine's
# address toward the hosts (--coordinator-host overrides it).
if [ -z "${placement_hosts[0]}" ]; then
    coordinator_host=${coordinator_host:-127.0.0.1}
else
    coordinator_host=${coordinator_host:-$(hostname -I 2>/dev/null | awk '{print $1}')}
    [ -n "$coordinator_host" ] || fail "cannot tell this machine's address; pass --coordinator-host ADDRESS"
fi

# The coordinator creates the run directory once it has checked every worker flag, so a
# mistake leaves nothing behind; it tells its port through a file outside it.
port_directory=$(mktemp -d "${TMPDIR:-/tmp}/mae-launch.XXXXXX")
port_file=$port_directory/port
coordinator_pid=""
agent_pids=()
# alive PID...: the pids among them that still run (a child that ended but is not reaped yet, a
# zombie, does not).
# No programs are started for it (bash builtins only): on a loaded machine every fork counts.
alive() {
    local pid stat
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null || continue
        stat=""
        read -r stat < "/proc/$pid/stat" 2>/dev/null || continue
        stat=${stat##*) }
        [ "${stat%% *}" != Z ] && echo "$pid"
    done
    return 0
}
# wait_gone SECONDS PID...: polls until none of them runs, at most SECONDS of wall time (not a
# count of polls, which a loaded machine would stretch); false when some still do.
wait_gone() {
    local limit=$1; shift
    local end=$(( SECONDS + limit ))
    while [ "$SECONDS" -lt "$end" ]; do [ -n "$(alive "$@")" ] || return 0; sleep 0.2; done
    [ -z "$(alive "$@")" ]
}
# Ends every agent still running, by pid: SIGTERM (it stops its workers: SIGTERM, then SIGKILL
# after its --grace of 5 s), then SIGKILL once 10 s are over (a worker whose agent is gone exits
# by itself within a second). Bounded: about 12 s.
stop_agents() {
    local pid left
    left=$(alive "${agent_pids[@]+"${agent_pids[@]}"}")
    [ -n "$left" ] || return 0
    for pid in $left; do kill -TERM "$pid" 2>/dev/null || true; done
    wait_gone 10 $left && return 0
    for pid in $(alive $left); do
        echo "launch.sh: the agent with pid $pid did not stop within 10 s of SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait_gone 2 $left || true
}
# Whatever happens to this script, nothing it started keeps running: the coordinator
# stops gracefully when it sees us gone (--exit-with-parent) and its agents stop their
# workers; this trap also stops what is left by pid.
cleanup() {
    rm -rf "$port_directory"
    [ -z "$coordinator_pid" ] || kill -TERM "$coordinator_pid" 2>/dev/null || true
    stop_agents
}
on_signal() {
    echo "launch.sh: stopping the run (the workers finish their step and write a checkpoint; signal again to stop at once)" >&2
    [ -z "$coordinator_pid" ] || kill -TERM "$coordinator_pid" 2>/dev/null || true
}
trap on_signal INT TERM
trap cleanup EXIT

# start_coordinator HOST:PORT: starts `serve` in the background, sets coordinator_pid, and waits
# (at most 60 s) until it listens; false when it ended first.
start_coordinator() {
    rm -f "$port_file"
    "$bin/mae-coordinator" serve --world-size "$nodes" --addr "$1" --metrics-addr "$metrics_addr" \
        --max-restarts "$max_restarts" --heartbeat-timeout "$heartbeat_timeout" --port-file "$port_file" --exit-with-parent \
        -- --run-dir "$run_dir" "${common[@]}" "${worker_flags[@]+"${worker_flags[@]}"}" &
    coordinator_pid=$!
    local end=$(( SECONDS + 60 ))
    while [ "$SECONDS" -lt "$end" ]; do
        [ -s "$port_file" ] && return 0
        [ -n "$(alive "$coordinator_pid")" ] || return 1
        sleep 0.1
    done
    [ -s "$port_file" ]
}
# Port 0 lets the kernel choose a free port in the coordinator's own bind: no race.
start_coordinator "$coordinator_host:$port" || true
if [ ! -s "$port_file" ]; then
    set +e; wait "$coordinator_pid"; status=$?; set -e
    coordinator_pid=""
    echo "launch.sh: the coordinator did not start (exit status $status)" >&2
    exit "$status"
fi
address=$(cat "$port_file")
echo "Run directory: $run_dir (logs: $run_dir/logs/rank-N.log)"
echo "Status:        $bin/mae-coordinator status --run-dir $(printf '%q' "$run_dir") [--watch] [--json]"

# One agent per machine. An agent that fails while the run goes on (its ssh connection or
# machine was lost, or it was killed) is started again, a few times, so that the machine
# rejoins the next generation. One that exits 0 was told that the run is over (or got
# SIGTERM): it is not started again, even though the coordinator is still finishing.
agent_starts=()
agent_ended=()
start_agent() {
    local index=$1 host=${placement_hosts[$1]} slots=${placement_slots[$1]} first=0 i launcher remote
    for ((i = 0; i < index; i++)); do first=$((first + placement_slots[i])); done
    local agent=("$bin/mae-coordinator" agent --coordinator "$address" --run-dir "$run_dir" --first-rank "$first" --nproc "$slots"
                 --backend "$backend" --transport "$transport")
    if [ -z "$host" ]; then
        "${agent[@]}" &
    else
        # One string for the remote shell with every word quoted: host names and paths cannot run commands.
        # `exec`: the agent replaces the remote shell, so that a wrapper that runs the command on
        # this machine (a namespace, a container) leaves the agent itself behind the pid we keep.
        remote="exec $(printf '%q ' "${agent[@]}" --host-name "$host")"
        read -r -a launcher <<< "$ssh_command"
        "${launcher[@]}" "$host" "$remote" < /dev/null &
    fi
    agent_pids[$index]=$!
    agent_starts[$index]=$(( ${agent_starts[$index]:-0} + 1 ))
}
for index in "${!placement_hosts[@]}"; do start_agent "$index"; done

# A coordinator that dies by a signal or a crash (any status but its own 0-3) is started
# again on the run directory and its address: the agents keep their workers training
# meanwhile and reconnect, and it adopts them (docs/DISTRIBUTED.md).
coordinator_restarts=0
max_coordinator_restarts=$(( max_restarts > 3 ? max_restarts : 3 ))
set +e
while true; do
    while kill -0 "$coordinator_pid" 2>/dev/null; do
        sleep 0.5
        kill -0 "$coordinator_pid" 2>/dev/null || break
        for index in "${!agent_pids[@]}"; do
            [ -z "${agent_ended[$index]:-}" ] || continue
            kill -0 "${agent_pids[$index]}" 2>/dev/null && continue
            wait "${agent_pids[$index]}"; agent_status=$?
            if [ "$agent_status" -ne 0 ] && [ "${agent_starts[$index]}" -le "$max_restarts" ]; then
                echo "launch.sh: the agent of ${placement_hosts[$index]:-this machine} ended; starting it again (exit status $agent_status)" >&2
                start_agent "$index"
            else
                agent_ended[$index]=1
            fi
        done
    done
    wait "$coordinator_pid"; status=$?
    case $status in 0|1|2|3) break ;; esac
    if [ $coordinator_restarts -ge $max_coordinator_restarts ]; then
        echo "launch.sh: the coordinator ended abnormally again (exit status $status) after $coordinator_restarts start(s) of it; giving up" >&2
        break
    fi
    coordinator_restarts=$((coordinator_restarts + 1))
    echo "launch.sh: the coordinator ended abnormally (exit status $status); starting it again on $run_dir" \
         "($coordinator_restarts of $max_coordinator_restarts), to adopt the agents and workers that train on" >&2
    if ! start_coordinator "$address"; then
        wait "$coordinator_pid"; status=$?
        echo "launch.sh: the coordinator started again did not listen (exit status $status)" >&2
        break
    fi
done
set -e
coordinator_pid=""
# The agents exit once the coordinator shut them down (after stopping their workers: at most
# their --grace of 5 s); any still running then is stopped, so that nothing this script
# started outlives it.
wait_gone 15 "${agent_pids[@]}" || stop_agents
case $status in
    0) meaning="finished" ;;
    1) meaning="failed after the restarts ran out" ;;
    2) meaning="bad configuration" ;;
    3) meaning="stopped on request; continue with: ./launch.sh --run-dir $run_dir --resume auto ..." ;;
    *) meaning="the coordinator ended abnormally" ;;
esac
echo "launch.sh: exit status $status ($meaning)"
exit "$status"
