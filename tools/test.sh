#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh --mpi --netns
swift build --build-tests
swift test --skip-build
# The MPI backend (package trait MPI), built in its own folder so that the default
# build above stays free of MPI; only the MPI-specific tests run here.
swift build --build-tests --traits MPI --scratch-path .build/mpi
swift test --skip-build --traits MPI --scratch-path .build/mpi --filter "MPICollectiveTests|MPICoordinatorTests"
