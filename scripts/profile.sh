#!/usr/bin/env bash
# Where veil's time goes under load: two veil daemons in two fresh network namespaces (the
# same set-up as scripts/bench.sh), iperf3 TCP through the tunnel, and `perf record` (software
# cpu-clock sampling, so it works without hardware counters) of both daemons meanwhile.
#
# Usage: sudo scripts/profile.sh [--time SECONDS] [--reverse] [--streams N] [--out DIR]
# Writes DIR/sender.data and DIR/receiver.data and prints the top of `perf report` for each
# (symbols; children folded). Everything runs in namespaces this script creates and removes.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VEIL="$ROOT/target/release/veil"
TIME=5
REVERSE=""
STREAMS=1
OUT="/tmp/veil-profile"
while [ $# -gt 0 ]; do
    case "$1" in
        --time) TIME="${2:?}"; shift ;;
        --reverse) REVERSE="-R" ;;
        --streams) STREAMS="${2:?}"; shift ;;
        --out) OUT="${2:?}"; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "profile.sh needs root" >&2; exit 1; }
for t in perf iperf3 wg ip; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
[ -x "$VEIL" ] || (cd "$ROOT" && cargo build --release) || exit 1
mkdir -p "$OUT"

tag="p$$"
nsa="vprof${tag}a"; nsb="vprof${tag}b"; tuna="vpt${tag}a"; tunb="vpt${tag}b"
pids=()
cleanup() {
    for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null; done
    sleep 0.3
    ip netns del "$nsa" 2>/dev/null; ip netns del "$nsb" 2>/dev/null
    rm -f "/var/run/wireguard/$tuna.sock" "/var/run/wireguard/$tunb.sock"
}
trap cleanup EXIT
ip netns add "$nsa"; ip netns add "$nsb"
ip link add "vpv${tag}a" netns "$nsa" type veth peer name "vpv${tag}b" netns "$nsb"
ip -n "$nsa" addr add 10.98.0.1/24 dev "vpv${tag}a"; ip -n "$nsb" addr add 10.98.0.2/24 dev "vpv${tag}b"
for ns in "$nsa" "$nsb"; do ip -n "$ns" link set lo up; done
ip -n "$nsa" link set "vpv${tag}a" up; ip -n "$nsb" link set "vpv${tag}b" up
ip netns exec "$nsa" "$VEIL" -f "$tuna" >"$OUT/a.log" 2>&1 & pida=$!; pids+=("$pida")
ip netns exec "$nsb" "$VEIL" -f "$tunb" >"$OUT/b.log" 2>&1 & pidb=$!; pids+=("$pidb")
for _ in $(seq 1 100); do [ -S "/var/run/wireguard/$tuna.sock" ] && [ -S "/var/run/wireguard/$tunb.sock" ] && break; sleep 0.05; done
ka="$(wg genkey)"; kb="$(wg genkey)"
ip netns exec "$nsa" wg set "$tuna" private-key <(echo "$ka") listen-port 51820 \
    peer "$(echo "$kb" | wg pubkey)" allowed-ips 10.99.0.2/32 endpoint 10.98.0.2:51820
ip netns exec "$nsb" wg set "$tunb" private-key <(echo "$kb") listen-port 51820 \
    peer "$(echo "$ka" | wg pubkey)" allowed-ips 10.99.0.1/32 endpoint 10.98.0.1:51820
ip -n "$nsa" addr add 10.99.0.1/24 dev "$tuna"; ip -n "$nsb" addr add 10.99.0.2/24 dev "$tunb"
ip -n "$nsa" link set "$tuna" mtu 1420 up; ip -n "$nsb" link set "$tunb" mtu 1420 up
for _ in $(seq 1 50); do ip netns exec "$nsa" ping -c1 -W1 -q 10.99.0.2 >/dev/null 2>&1 && break; sleep 0.1; done
ip netns exec "$nsb" iperf3 -s -1 -B 10.99.0.2 >/dev/null 2>&1 & pids+=($!)
sleep 0.3
# With -R the data flows B -> A: the sender daemon is then B's.
if [ -n "$REVERSE" ]; then snd="$pidb"; rcv="$pida"; else snd="$pida"; rcv="$pidb"; fi
perf record -F 2000 -e cpu-clock -g -p "$snd" -o "$OUT/sender.data" -- sleep "$TIME" >/dev/null 2>&1 &
p1=$!
perf record -F 2000 -e cpu-clock -g -p "$rcv" -o "$OUT/receiver.data" -- sleep "$TIME" >/dev/null 2>&1 &
p2=$!
ip netns exec "$nsa" iperf3 -c 10.99.0.2 -t "$TIME" -P "$STREAMS" $REVERSE | tail -n 4
wait "$p1" "$p2"
for side in sender receiver; do
    echo "=== $side daemon ==="
    perf report -i "$OUT/$side.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 30
done
