#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test.
# Every stage runs even when an earlier one failed, so one failure never hides another;
# the end prints one line per stage and the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

echo "test.sh: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //') ($(nproc) cores)," \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE:-unset}"

stages=()
failed=0
# stage NAME COMMAND...: runs the command, records its result and time.
stage() {
    local name=$1; shift
    local start=$SECONDS
    echo "=== $name: $*"
    "$@"
    local status=$?
    local line
    if [ "$status" -eq 0 ]; then line="passed"; else line="FAILED (exit $status)"; failed=1; fi
    stages+=("$(printf '%-26s %s in %d s' "$name" "$line" $(( SECONDS - start )))")
    return 0
}

stage "install dependencies" tools/install-deps.sh --mpi --netns
stage "build" swift build --build-tests
stage "tests" swift test --skip-build
# The MPI backend (package trait MPI), built in its own folder so that the default
# build above stays free of MPI; only the MPI-specific tests run here.
stage "build (MPI)" swift build --build-tests --traits MPI --scratch-path .build/mpi
stage "tests (MPI)" swift test --skip-build --traits MPI --scratch-path .build/mpi --filter MPICollectiveTests

echo
echo "test.sh summary:"
for line in "${stages[@]}"; do echo "  $line"; done
exit "$failed"
