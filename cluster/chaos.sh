#!/usr/bin/env bash
# The chaos suite: four namespace "machines" on one bridge, a short training through
# `launch.sh --hostfile` (one worker per machine), a seeded random sequence of faults, and
# the invariants checked at the end. An uninterrupted run of the same settings comes first,
# as the reference for the final weights.
#
# usage: cluster/chaos.sh [--seed S] [--faults N] [--kinds K1,K2,...] [--heartbeat-timeout S] [--keep]
#   --seed S     seed of the fault sequence (default: from the clock; always printed, to replay a failure)
#   --faults N   faults injected into the run (default 4)
#   --kinds      which faults to draw from (default: kill,stop,link,drop,slow,double)
#                  kill  SIGKILL of a random worker at a random step
#                  double  a SIGKILL, then a second one inside the restart: a worker of the next
#                        generation as soon as it has started
#                  stop  SIGSTOP of a worker for longer than the heartbeat timeout, then SIGCONT
#                  link  a machine's link down for 5 s, then up
#                  drop  nftables drops 5 % of a machine's incoming packets for 5 s
#                  slow  a slow, lossy link for 5 s: the machine's outgoing traffic limited to
#                        20 Mbit/s (tc tbf) and 5 % of its incoming packets dropped (nftables);
#                        this kernel has no netem, so there is no added delay
#                  coordinator  SIGKILL of the coordinator: launch.sh starts it again, and it
#                        adopts the agents and workers that trained on (no restart counted;
#                        the generation stays)
#   --heartbeat-timeout S  silence after which a worker or agent counts as failed (default 3)
#   --keep       keep the work folder (logs, run directories) instead of removing it
# Needs root, iproute2 and nftables (tools/install-deps.sh --netns). MAE_BIN_DIR selects the
# executables (default: a release build, made when missing).
# Exit status: 0 every invariant held, 1 one failed (the lines starting 'FAILED' say which), 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

seed=$(( $(date +%s) % 1000000 ))
faults=4
kinds=kill,stop,link,drop,slow,double
keep=0
heartbeat_timeout=3
fail() { echo "chaos.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) [ $# -ge 2 ] || fail "--seed needs a value"; seed=$2; shift 2 ;;
        --faults) [ $# -ge 2 ] || fail "--faults needs a value"; faults=$2; shift 2 ;;
        --kinds) [ $# -ge 2 ] || fail "--kinds needs a value"; kinds=$2; shift 2 ;;
        --heartbeat-timeout) [ $# -ge 2 ] || fail "--heartbeat-timeout needs a value"; heartbeat_timeout=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
done
case "$seed" in ''|*[!0-9]*) fail "--seed must be a number, got '$seed'" ;; esac
case "$faults" in ''|*[!0-9]*) fail "--faults must be a number ≥ 0, got '$faults'" ;; esac
case "$heartbeat_timeout" in ''|*[!0-9]*|0) fail "--heartbeat-timeout must be a whole number of seconds ≥ 1, got '$heartbeat_timeout'" ;; esac
IFS=, read -r -a kind_list <<< "$kinds"
for kind in "${kind_list[@]}"; do
    case "$kind" in kill|stop|link|drop|slow|double|coordinator) ;; *) fail "unknown fault kind '$kind' (kill, stop, link, drop, slow, double or coordinator)" ;; esac
done
[ "$(id -u)" -eq 0 ] || fail "needs root (it creates network namespaces)"
command -v ip >/dev/null || fail "needs iproute2: tools/install-deps.sh --netns"
command -v nft >/dev/null || fail "needs nftables: tools/install-deps.sh --netns"
command -v python3 >/dev/null || fail "needs python3 (reads the state file and checks checkpoints)"

bin=${MAE_BIN_DIR:-$repo/.build/release}
if [ ! -x "$bin/mae-coordinator" ] || [ ! -x "$bin/mae-worker" ] || [ ! -x "$bin/mae" ]; then
    [ -z "${MAE_BIN_DIR:-}" ] || fail "MAE_BIN_DIR=$bin holds no built mae, mae-coordinator and mae-worker"
    swift build -c release
fi
echo "chaos.sh: seed $seed, $faults fault(s) of kinds $kinds (replay: cluster/chaos.sh --seed $seed --faults $faults --kinds $kinds)"
RANDOM=$seed  # bash's generator, seeded: the same seed draws the same faults at the same steps

work=$(mktemp -d /tmp/mae-chaos.XXXXXX)
tag=$(( $$ % 10000 ))
machines=(mch0-$tag mch1-$tag mch2-$tag mch3-$tag)
hub=mchub-$tag
subnet=10.234.$(( $$ % 250 + 1 ))
launcher_pid=""

# Every process of this suite has $work in its command line; each is stopped by its pid.
suite_pids() {
    local pid
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$pid" != "$$" ] || continue
        tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q -- "$work" && echo "$pid"
    done
    return 0
}
cleanup() {
    [ -z "$launcher_pid" ] || kill -KILL "$launcher_pid" 2>/dev/null || true
    for pid in $(suite_pids); do kill -CONT "$pid" 2>/dev/null || true; kill -KILL "$pid" 2>/dev/null || true; done
    for namespace in "${machines[@]}" "$hub"; do ip netns delete "$namespace" 2>/dev/null || true; done
    if [ "$keep" = 1 ]; then echo "chaos.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that the clean-up runs

# The cluster: a hub namespace holding a bridge, one veth from each machine to it.
ip netns add "$hub"
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
for index in 0 1 2 3; do
    machine=${machines[$index]}
    ip netns add "$machine"
    ip -n "$machine" link set lo up
    ip -n "$machine" link add eth0 type veth peer name "p$index" netns "$hub"
    ip -n "$machine" address add "$subnet.$(( index + 1 ))/24" dev eth0
    ip -n "$machine" link set eth0 up
    ip -n "$hub" link set "p$index" master br0
    ip -n "$hub" link set "p$index" up
    echo "$machine slots=1" >> "$work/hostfile"
done
# What `ssh HOST 'COMMAND'` does for a host that is a namespace.
printf '#!/bin/sh\nexec ip netns exec "$1" /bin/sh -c "$2"\n' > "$work/netns-ssh"
chmod 755 "$work/netns-ssh"

"$bin/mae" synth-data "$work/data" --classes 2 --per-class 16 --size 24 --seed 11 > /dev/null
# 32 images, 4 workers of batch 2: 4 steps an epoch; 20 steps a fault, so that they land apart
# (a fault lasts up to 5 s, during which a fault that needs no restart lets training go on).
epochs=$(( faults * 5 + 4 ))
total=$(( epochs * 4 ))
flags=(--model-shape 4,16,1,2,8,1,2 --input-size 16 --batch-size 2 --epochs "$epochs" --warmup-epochs 1 --lr 1e-3
       --seed 5 --threads 1 --data-threads 1 --batch-shards 1 --print-every 1 --checkpoint-every 2 --keep-checkpoints 3
       --transport ring)

# launch NAME: starts launch.sh on the first machine in the background; sets launcher_pid.
launch() {
    MAE_BIN_DIR=$bin ip netns exec "${machines[0]}" /bin/bash "$repo/launch.sh" --hostfile "$work/hostfile" \
        --ssh "$work/netns-ssh" --coordinator-host "$subnet.1" --run-dir "$work/$1" --data "$work/data" \
        --max-restarts $(( faults * 2 + 2 )) --heartbeat-timeout "$heartbeat_timeout" "${flags[@]}" \
        > "$work/$1.log" 2>&1 &
    launcher_pid=$!
}
steps() { [ -f "$work/$1/metrics.jsonl" ] && wc -l < "$work/$1/metrics.jsonl" || echo 0; }
# state NAME FIELD: a field of the coordinator's state file (ranks.N.pid for a rank's pid).
state() {
    python3 - "$work/$1/coordinator.json" "$2" <<'EOF' 2>/dev/null || echo ""
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value)
EOF
}
# wait_for SECONDS COMMAND...: polls every 0.2 s; false when time runs out.
wait_for() {
    local limit=$1; shift
    local deadline=$(( SECONDS + limit ))
    until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.2; done
}
reached() { [ "$(steps "$1")" -ge "$2" ]; }
# True once launch.sh ended (a child not yet waited for is a zombie, which kill -0 still finds).
exited() {
    ! kill -0 "$launcher_pid" 2>/dev/null || [ "$(sed 's/.*) //' "/proc/$launcher_pid/stat" 2>/dev/null | cut -d' ' -f1)" = Z ]
}

failures=0
check() { # check DESCRIPTION COMMAND...
    local description=$1; shift
    if "$@"; then echo "ok      $description"; else echo "FAILED  $description"; failures=$(( failures + 1 )); fi
}

# 1. The reference: the same run without faults.
start=$SECONDS
launch straight
wait_for 600 exited || { echo "FAILED  the reference run did not end within 600 s"; exit 1; }
wait "$launcher_pid" || { echo "FAILED  the reference run failed:"; tail -20 "$work/straight.log"; exit 1; }
straight_seconds=$(( SECONDS - start ))
echo "chaos.sh: reference run: $total steps in $straight_seconds s"

# 2. The run under faults.
start=$SECONDS
launch chaos
declare -A injected=()
certain_restarts=0   # faults that always need a restart (kill, each kill of double, stop longer than the heartbeat timeout)
possible_restarts=0  # faults that may (a link down, dropped packets)
unadopted=()         # coordinator kills after which the generation or the restart count changed (none may)
lost_report=()
wait_for 120 reached chaos 2 || true
# drop_incoming MACHINE: nftables drops 5 % of the packets MACHINE receives, until its table
# `inet chaos` is deleted.
drop_incoming() {
    ip netns exec "$1" nft add table inet chaos
    ip netns exec "$1" nft 'add chain inet chaos input { type filter hook input priority 0; }'
    ip netns exec "$1" nft add rule inet chaos input numgen random mod 100 \< 5 drop
}
for (( fault = 1; fault <= faults; fault++ )); do
    kind=${kind_list[$(( RANDOM % ${#kind_list[@]} ))]}
    rank=$(( RANDOM % 4 ))
    at=$(( $(steps chaos) + 1 + RANDOM % 5 ))
    [ "$at" -lt "$total" ] || { echo "chaos.sh: fault $fault: the run is nearly over, no more faults"; break; }
    wait_for 120 reached chaos "$at" || { echo "chaos.sh: fault $fault: step $at never came"; break; }
    exited && break
    before=$(steps chaos)
    fault_start=$(date +%s.%N)
    pid=$(state chaos "ranks.$rank.pid")
    case "$kind" in
        kill)
            [ -n "$pid" ] && [ "$pid" -gt 0 ] && kill -KILL "$pid" 2>/dev/null || { echo "chaos.sh: rank $rank has no process now"; continue; }
            certain_restarts=$(( certain_restarts + 1 ))
            ;;
        double)
            generation=$(state chaos generation)
            [ -n "$pid" ] && [ "$pid" -gt 0 ] && kill -KILL "$pid" 2>/dev/null || { echo "chaos.sh: rank $rank has no process now"; continue; }
            certain_restarts=$(( certain_restarts + 1 ))
            second=$(( RANDOM % 4 ))
            next_started() {
                local started
                started=$(state chaos "ranks.$second.pid")
                [ "$(state chaos generation)" -gt "$generation" ] 2>/dev/null && [ "${started:-0}" -gt 0 ] 2>/dev/null
            }
            if wait_for 60 next_started; then
                landed=$(state chaos phase)
                kill -KILL "$(state chaos "ranks.$second.pid")" 2>/dev/null && certain_restarts=$(( certain_restarts + 1 ))
                echo "chaos.sh: fault $fault: the second kill hit rank $second of generation $(( generation + 1 )) while $landed"
            else
                echo "chaos.sh: fault $fault: generation $(( generation + 1 )) never started; no second kill"
            fi
            ;;
        stop)
            [ -n "$pid" ] && [ "$pid" -gt 0 ] && kill -STOP "$pid" 2>/dev/null || { echo "chaos.sh: rank $rank has no process now"; continue; }
            sleep $(( heartbeat_timeout + 2 ))
            kill -CONT "$pid" 2>/dev/null || true
            certain_restarts=$(( certain_restarts + 1 ))
            ;;
        link)
            ip -n "${machines[$rank]}" link set eth0 down
            sleep 5
            ip -n "${machines[$rank]}" link set eth0 up
            possible_restarts=$(( possible_restarts + 2 ))
            ;;
        coordinator)
            generation=$(state chaos generation)
            restarts_before=$(state chaos restarts)
            coordinator=$(state chaos coordinatorPid)
            [ -n "$coordinator" ] && [ "$coordinator" -gt 0 ] && kill -KILL "$coordinator" 2>/dev/null || { echo "chaos.sh: no coordinator to kill"; continue; }
            # launch.sh starts it again; it must adopt the running generation without a restart.
            back() { exited || { [ "$(state chaos coordinatorPid)" != "$coordinator" ] && [ "$(state chaos phase)" != adopting ]; }; }
            wait_for 120 back || echo "chaos.sh: fault $fault: no coordinator adopted the run within 120 s"
            echo "chaos.sh: fault $fault: the workers trained $(( $(steps chaos) - before )) step(s) until a coordinator had" \
                 "adopted them, $(python3 -c "import time; print('%.1f' % (time.time() - $fault_start))") s after the kill"
            if ! exited && { [ "$(state chaos generation)" != "$generation" ] || [ "$(state chaos restarts)" != "$restarts_before" ]; }; then
                unadopted+=("fault $fault: generation $generation -> $(state chaos generation), restarts $restarts_before -> $(state chaos restarts)")
            fi
            ;;
        slow)
            tc -n "${machines[$rank]}" qdisc add dev eth0 root tbf rate 20mbit burst 32kb latency 400ms
            drop_incoming "${machines[$rank]}"
            sleep 5
            ip netns exec "${machines[$rank]}" nft delete table inet chaos
            tc -n "${machines[$rank]}" qdisc del dev eth0 root
            possible_restarts=$(( possible_restarts + 1 ))
            ;;
        drop)
            drop_incoming "${machines[$rank]}"
            sleep 5
            ip netns exec "${machines[$rank]}" nft delete table inet chaos
            possible_restarts=$(( possible_restarts + 1 ))
            ;;
    esac
    injected[$kind]=$(( ${injected[$kind]:-0} + 1 ))
    # Back to work: the coordinator reports training again, and a step past where the fault hit.
    recovered() { exited || { [ "$(state chaos phase)" = training ] && [ "$(state chaos progress.step)" -gt "$before" ] 2>/dev/null; }; }
    wait_for 180 recovered || echo "chaos.sh: fault $fault: not training again within 180 s"
    lost=$(python3 -c "import time; print('%.1f' % (time.time() - $fault_start))")
    echo "chaos.sh: fault $fault: $kind on rank $rank (${machines[$rank]}) at step $before; past it again after $lost s" \
         "(restarts so far: $(state chaos restarts))"
    lost_report+=("$kind:$lost")
done
wait_for 900 exited || { echo "FAILED  the run under faults did not end within 900 s"; exit 1; }
set +e; wait "$launcher_pid"; status=$?; set -e
launcher_pid=""
chaos_seconds=$(( SECONDS - start ))

# 3. The invariants.
restarts=$(state chaos restarts)
check "the run completes (launch.sh exit $status, state $(state chaos phase))" [ "$status" = 0 ]
check "restarts $restarts within $certain_restarts..$(( certain_restarts + possible_restarts )) (the faults that need one)" \
    test "${restarts:-0}" -ge "$certain_restarts" -a "${restarts:-0}" -le $(( certain_restarts + possible_restarts ))
final=$(printf 'step-%08d' "$total")
same_weights=0
for file in model.safetensors optimizer.safetensors; do
    cmp -s "$work/straight/checkpoints/$final/$file" "$work/chaos/checkpoints/$final/$file" && same_weights=$(( same_weights + 1 ))
done
check "every coordinator kill adopted (generation and restarts unchanged): ${injected[coordinator]:-0} kill(s)${unadopted[*]:+; not: ${unadopted[*]}}" \
    [ ${#unadopted[@]} -eq 0 ]
check "final weights and optimizer state equal the uninterrupted run's ($final)" [ "$same_weights" = 2 ]
# Processes that launch.sh stopped may take a moment to be gone on a loaded machine: wait up
# to 10 s, then name whatever is left.
left=""
for _ in $(seq 1 20); do
    left=$(suite_pids | tr '\n' ' ')
    [ -n "${left// /}" ] || break
    sleep 0.5
done
left=$(echo $left)
check "no process left behind${left:+ (pids $left)}" [ -z "$left" ]
for pid in $left; do echo "  left behind: pid $pid: $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)"; done
check_checkpoints() {
    python3 - "$work/chaos/checkpoints" <<'EOF'
import json, os, sys
root, bad = sys.argv[1], 0
def fnv(path):
    value = 0xcbf29ce484222325
    for byte in open(path, "rb").read():
        value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % value
for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if not name.startswith("step-"):
        continue  # damaged-… and .tmp-… are marked as not complete
    if not os.path.exists(os.path.join(path, "COMPLETE")):
        print("  %s has no COMPLETE marker" % name); bad += 1; continue
    state = json.load(open(os.path.join(path, "state.json")))
    for file, expected in state.get("checksums", {}).items():
        actual = fnv(os.path.join(path, file))
        if not expected.endswith(actual):
            print("  %s/%s: checksum %s, expected %s" % (name, file, actual, expected)); bad += 1
sys.exit(1 if bad else 0)
EOF
}
check "every checkpoint on disk is complete and matches its checksums" check_checkpoints
check_steps() {
    python3 - "$work/chaos/metrics.jsonl" "$total" <<'EOF'
import json, sys
steps = [json.loads(line)["step"] for line in open(sys.argv[1]) if line.strip()]
wanted = list(range(1, int(sys.argv[2]) + 1))
if steps != wanted:
    print("  steps logged: %s" % steps); sys.exit(1)
EOF
}
check "every step's line appears once in metrics.jsonl (1...$total)" check_steps

kinds_text=""
for kind in kill stop link drop slow double coordinator; do kinds_text+="$kind ${injected[$kind]:-0}, "; done
echo "chaos.sh: seed $seed: faults ${kinds_text%, }; restarts $restarts; lost per fault: ${lost_report[*]:-none};" \
     "reference $straight_seconds s, under faults $chaos_seconds s (+$(( chaos_seconds - straight_seconds )) s)"
if [ "$failures" -gt 0 ]; then
    echo "chaos.sh: $failures invariant(s) FAILED (seed $seed); logs in $work"
    keep=1
    exit 1
fi
echo "chaos.sh: every invariant held"
