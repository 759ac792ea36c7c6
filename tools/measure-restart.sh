#!/usr/bin/env bash
# Measures what an automatic restart costs: the demo run (./launch.sh --nodes 4, the tiny
# model on the demo dataset) is started, one worker is killed with SIGKILL after step
# KILL_STEP, and the script reports the seconds from the kill to the end of the first
# training step after the restart, and the steps lost since the checkpoint.
# usage: tools/measure-restart.sh [KILL_STEP (default 23)] [RANK (default 2)]
set -euo pipefail
cd "$(dirname "$0")/.."
kill_step=${1:-23}
rank=${2:-2}
mkdir -p runs
run_dir=runs/measure-restart-$$
swift build -c release >/dev/null
./launch.sh --nodes 4 --run-dir "$run_dir" --print-every 1 --checkpoint-every 10 > "$run_dir.log" 2>&1 &
launcher=$!
trap 'kill -TERM $launcher 2>/dev/null || true' EXIT
last_step() { tail -n 1 "$run_dir/metrics.jsonl" 2>/dev/null | sed -n 's/.*"step": *\([0-9]*\).*/\1/p'; }
for _ in $(seq 1 3000); do [ "$(last_step)" ] && [ "$(last_step)" -ge "$kill_step" ] && break; sleep 0.05; done
pid=$(python3 -c "import json,sys; print(json.load(open('$run_dir/coordinator.json'))['ranks'][$rank]['pid'])")
killed_at_step=$(last_step)
start=$(date +%s.%N)
kill -KILL "$pid"
# The resumed run first drops the lines after its checkpoint, then logs the next step again.
went_back=""
joined=""
phase() { python3 -c "import json; s=json.load(open('$run_dir/coordinator.json')); print(s['generation'], s['phase'])" 2>/dev/null || true; }
for _ in $(seq 1 2000); do
    [ -n "$joined" ] || { [ "$(phase)" = "1 training" ] && joined=$(date +%s.%N); }
    step=$(last_step)
    if [ -z "$went_back" ] && [ -n "$step" ] && [ "$step" -lt "$killed_at_step" ]; then went_back=$step; fi
    if [ -n "$went_back" ] && [ -n "$step" ] && [ "$step" -gt "$went_back" ]; then break; fi
    sleep 0.05
done
end=$(date +%s.%N)
echo "killed rank $rank (pid $pid) after step $killed_at_step; resumed from the checkpoint of step $went_back"
echo "restart_seconds=$(echo "$end - $start" | bc) (kill to the end of the first step after the restart)" \
     "rejoined_seconds=$(echo "${joined:-$end} - $start" | bc) (kill to the new generation's ring formed)" \
     "steps_lost=$((killed_at_step - went_back))"
grep -o '[0-9.]* img/s' "$run_dir.log" | tail -3 | tr '\n' ' '; echo "(speed before the end)"
wait $launcher || true
trap - EXIT
grep -E "failure|generation 1|exit status" "$run_dir.log" | grep -v "^epoch" || true
