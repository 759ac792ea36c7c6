#!/usr/bin/env bash
# Installs the Debian packages the build needs, when they are missing.
# usage: tools/install-deps.sh [--mpi] [--netns]
#   --mpi     also Open MPI (libopenmpi-dev, openmpi-bin) for the MPI backend
#   --netns   also iproute2 and nftables, for the tests that join ranks across network namespaces
#             and the chaos suite (cluster/chaos.sh drops packets with nftables)
# As root it runs apt-get; otherwise it prints the exact command and stops.
set -euo pipefail

packages=()
need() { # need PACKAGE CHECK-COMMAND...
    local package=$1; shift
    "$@" >/dev/null 2>&1 || packages+=("$package")
}
need pkg-config command -v pkg-config
need libopenblas-dev pkg-config --exists openblas
need libjpeg-dev pkg-config --exists libjpeg
need libpng-dev pkg-config --exists libpng
need libdnnl-dev test -e /usr/include/oneapi/dnnl/dnnl.h
for argument in "$@"; do
    case "$argument" in
        --mpi)
            need libopenmpi-dev pkg-config --exists ompi-c
            need openmpi-bin command -v mpirun
            ;;
        --netns)
            need iproute2 command -v ip
            need nftables command -v nft
            ;;
        *) echo "install-deps.sh: unknown option $argument (expected --mpi or --netns)" >&2; exit 2 ;;
    esac
done

[ ${#packages[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages: ${packages[*]}" >&2
    echo "Install them with:  sudo apt-get update && sudo apt-get install -y ${packages[*]}" >&2
    exit 1
fi
echo "Installing ${packages[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"
