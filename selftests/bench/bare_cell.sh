#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Calibration cell of 'mptcp-nvme matrix': one cell of mptcp_nvme.sh's scenario set up
# and measured from a plain shell, with none of the framework's code (pyroute2, configfs
# helpers, samplers) involved; the test that starts it only waits for it. Written for
# this suite from the steps the script takes (shared REFERENCE.md), not copied from it.
#
# Usage: bare_cell.sh TRTYPE PATHS IOPOLICY LINKS RATE_BIT DELAY_US LOSS_PCT OUTDIR \
#            -- FIO_ARGS...
# Builds LINKS veth pairs between two new namespaces (netem rate, and delay/loss when not
# 0, on both ends; MPTCP limits 8/8, signal endpoints on the target, subflow endpoints on
# the host, default routes via every link with metric 10<i>), a subsystem on a sparse
# 512 MiB file on a loop device with a port per connection, PATHS controllers, IOPOLICY;
# then runs the fio command twice, first with --rw=randread then --rw=randwrite (the
# FIO_ARGS name @DEV@ for the namespace device and @RW@ for the direction), each
# followed by 'nvme flush', writing OUTDIR/<rw>.json. Everything is removed on exit.

set -euo pipefail

[ $# -ge 10 ] && [ "$9" = "--" ] || { echo "usage: $0 TRTYPE PATHS IOPOLICY LINKS RATE_BIT DELAY_US LOSS_PCT OUTDIR -- FIO_ARGS..." >&2; exit 2; }
trtype=$1 paths=$2 iopolicy=$3 links=$4 rate=$5 delay=$6 loss=$7 out=$8
shift 9

cfg=/sys/kernel/config/nvmet
tns=bare-target-$$ hns=bare-host-$$
nqn=nqn.2014-08.org.nvmexpress.${trtype}dev.bare.$$
trsvcid=$((20000 + $$ % 10000))
file=$(mktemp /tmp/bare-cell.XXXXXX)
loop="" ports=()

in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

cleanup() {
	set +e
	in_ns "$hns" nvme disconnect -n "$nqn" >/dev/null 2>&1
	for port in "${ports[@]}"; do
		rm -f "$cfg/ports/$port/subsystems/$nqn"
		rmdir "$cfg/ports/$port"
	done
	if [ -d "$cfg/subsystems/$nqn" ]; then
		echo 0 > "$cfg/subsystems/$nqn/namespaces/1/enable"
		rmdir "$cfg/subsystems/$nqn/namespaces/1" "$cfg/subsystems/$nqn"
	fi
	[ -n "$loop" ] && losetup -d "$loop"
	rm -f "$file"
	ip netns del "$tns" 2>/dev/null
	ip netns del "$hns" 2>/dev/null
}
trap cleanup EXIT

# --- network ---
ip netns add "$tns"
ip netns add "$hns"
shaping="rate ${rate}bit"
[ "$delay" != 0 ] && shaping="$shaping delay ${delay}us"
[ "$loss" != 0 ] && shaping="$shaping loss ${loss}%"
for ns in "$tns" "$hns"; do
	ip -n "$ns" link set lo up
	in_ns "$ns" sysctl -q net.mptcp.enabled=1
	ip -n "$ns" mptcp limits set subflows 8 add_addr_accepted 8
done
for i in $(seq 1 "$links"); do
	ip link add "ns1eth$i" netns "$tns" type veth peer name "ns2eth$i" netns "$hns"
	ip -n "$tns" addr add "10.1.$i.1/24" dev "ns1eth$i"
	ip -n "$hns" addr add "10.1.$i.2/24" dev "ns2eth$i"
	ip -n "$tns" link set "ns1eth$i" up
	ip -n "$hns" link set "ns2eth$i" up
	ip -n "$hns" route add default via "10.1.$i.1" dev "ns2eth$i" metric "10$i"
	ip -n "$tns" mptcp endpoint add "10.1.$i.1" dev "ns1eth$i" signal
	ip -n "$hns" mptcp endpoint add "10.1.$i.2" dev "ns2eth$i" subflow
	# shellcheck disable=SC2086  # $shaping is a list of tc words
	tc -n "$tns" qdisc add dev "ns1eth$i" root netem $shaping
	# shellcheck disable=SC2086
	tc -n "$hns" qdisc add dev "ns2eth$i" root netem $shaping
done

# --- target ---
modprobe -a nvmet nvmet-tcp nvme-tcp loop
truncate -s 512M "$file"
loop=$(losetup --find --show "$file")
mkdir "$cfg/subsystems/$nqn"
echo 1 > "$cfg/subsystems/$nqn/attr_allow_any_host"
mkdir "$cfg/subsystems/$nqn/namespaces/1"
echo "$loop" > "$cfg/subsystems/$nqn/namespaces/1/device_path"
echo 1 > "$cfg/subsystems/$nqn/namespaces/1/enable"
for i in $(seq 1 "$paths"); do
	port=$((20000 + ($$ + i) % 10000))
	mkdir "$cfg/ports/$port"
	ports+=("$port")
	traddr=10.1.$i.1
	[ "$paths" = 1 ] && traddr=0.0.0.0
	echo "$trtype" > "$cfg/ports/$port/addr_trtype"
	echo ipv4 > "$cfg/ports/$port/addr_adrfam"
	echo "$traddr" > "$cfg/ports/$port/addr_traddr"
	echo "$trsvcid" > "$cfg/ports/$port/addr_trsvcid"
	# the listener is made in the namespace of the process that links the port
	in_ns "$tns" ln -s "$cfg/subsystems/$nqn" "$cfg/ports/$port/subsystems/$nqn"
done

# --- host ---
for i in $(seq 1 "$paths"); do
	in_ns "$hns" nvme connect -t "$trtype" -a "10.1.$i.1" -s "$trsvcid" -n "$nqn" >/dev/null
done
dev="" subsys=""
for _ in $(seq 1 100); do           # the namespace's block device, up to 10 s
	for s in /sys/class/nvme-subsystem/nvme-subsys*; do
		[ "$(cat "$s/subsysnqn" 2>/dev/null)" = "$nqn" ] || continue
		subsys=$s
		for d in "$s"/nvme*n*; do [ -e "$d" ] && dev=/dev/$(basename "$d") && break; done
	done
	[ -n "$dev" ] && [ -b "$dev" ] && break
	dev=""
	sleep 0.1
done
[ -n "$dev" ] || { echo "bare_cell: no namespace device for $nqn after 10 s" >&2; exit 1; }
echo "$iopolicy" > "$subsys/iopolicy"
[ "$(cat "$subsys/iopolicy")" = "$iopolicy" ] || { echo "bare_cell: iopolicy not set" >&2; exit 1; }

# --- fio, as the framework's cell runs it ---
for rw in randread randwrite; do
	args=("${@//@DEV@/$dev}")
	in_ns "$hns" "${args[@]//@RW@/$rw}" > "$out/$rw.json"
	nvme flush "$dev" >/dev/null
done
