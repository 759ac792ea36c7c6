# Two machines for the bench scripts (bench-overlap.sh, bench-hierarchical.sh): network
# namespaces A and B joined by a veth pair. Sourced, not run; needs root.
#
#   make_two_machines maeA vA 10.231.0     # namespaces maeA$$ / maeB$$, links vA$$ / vB$$,
#                                           # addresses 10.231.0.1 / 10.231.0.2 (24-bit subnet)
#   shape_link RATE                         # tbf at RATE each way ("unshaped": none)
#   remove_two_machines                     # from the caller's EXIT trap
#
# Sets `machines`, `links` and `addresses` (arrays of two) for the caller.

# make_two_machines NAME_PREFIX LINK_PREFIX SUBNET: the names get A/B and this shell's pid.
make_two_machines() {
    local name=$1 link=$2 subnet=$3 side
    machines=("${name%A}A$$" "${name%A}B$$")
    links=("${link%A}A$$" "${link%A}B$$")
    addresses=("$subnet.1" "$subnet.2")
    for side in 0 1; do ip netns add "${machines[$side]}"; ip -n "${machines[$side]}" link set lo up; done
    ip -n "${machines[0]}" link add "${links[0]}" type veth peer name "${links[1]}" netns "${machines[1]}"
    for side in 0 1; do
        ip -n "${machines[$side]}" address add "${addresses[$side]}/24" dev "${links[$side]}"
        ip -n "${machines[$side]}" link set "${links[$side]}" up
    done
}

# shape_link RATE: a token bucket at RATE on each end of the link (both directions); the burst
# holds 1 ms at 10 Gbit/s. "unshaped" removes it. (A kernel with netem could add a delay here;
# docs/PERFORMANCE.md, "Issue 13: status of every requirement", gives the lines.)
shape_link() {
    local rate=$1 side
    for side in 0 1; do
        ip netns exec "${machines[$side]}" tc qdisc del dev "${links[$side]}" root 2>/dev/null || true
        if [ "$rate" != unshaped ]; then
            ip netns exec "${machines[$side]}" tc qdisc add dev "${links[$side]}" root tbf rate "$rate" \
                burst 1250kb latency 100ms
        fi
    done
}

remove_two_machines() {
    local machine
    for machine in "${machines[@]}"; do ip netns delete "$machine" 2>/dev/null || true; done
}
