#!/usr/bin/env bash
# A handshake flood against a tunnel, veil and wireguard-go side by side (issue 9, part 1).
#
# For each implementation (the same one in every daemon) this creates four network namespaces
# joined to B by veth pairs: A (10.97.1.1), C (10.97.2.1) and the flooder F (10.97.3.1); B is
# 10.97.x.2 on each. Daemons run in A, B and C; B knows A and C; the tunnel is 10.99.1.0/24
# (A .1, B .2, C .3). Then it measures:
#   base     iperf3 TCP A -> B through the tunnel, 1 stream, --time seconds, no flood.
#   flood    F starts examples/flood.rs at B (--rate initiations/s with a valid mac1 for B's
#            public key, from --ports source ports; bounded to the run's length).
#   new      one second into the flood, C (which has never talked to B) pings B once through
#            the tunnel: the ping's round trip includes C's whole handshake with B (the echo
#            waits for it), so it is the time a new legitimate handshake takes during the
#            flood (">N s" when no reply came within the wait).
#   loaded   the same iperf3 A -> B during the flood, and its ratio to base.
#   rss      B's VmRSS right after, and its peak (VmHWM) over the whole run.
#   rcvbuf   datagrams B's kernel dropped at its full UDP receive buffers (RcvbufErrors of B's
#            namespace); the rest of the flood that B did not answer it dropped itself.
# and prints the flooder's achieved rate. The machine's load average is printed too: compare
# within one run. Everything runs in namespaces this script creates and removes.
#
# Usage: sudo scripts/flood.sh [--only veil,wireguard-go] [--rate N] [--ports N] [--time S]
#                              [--rounds N] [--variant LABEL=VAR=VALUE[,VAR=VALUE...]]...
#   --only LIST  implementations (default veil,wireguard-go)
#   --rate N     flood initiations per second (default 200000; 0 = as fast as it can)
#   --ports N    flood source ports (default 256)
#   --time S     iperf3 -t of each run (default 10)
#   --rounds N   run every implementation N times, interleaved (default 1)
#   --variant L=ENV  also run veil with environment ENV as the row "veil[L]", right after veil;
#                repeatable. VEIL_BIN=PATH among them runs that build of veil instead (the
#                directory must also hold its veil-daemon), to compare commits in one run
# Needs root, iproute2, iperf3, ping, wg, python3, cargo (builds veil and the flood example in
# release mode) and the Debian wireguard-go binary for that row.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# stop_pid, teardown (of LIVE_PIDS, LIVE_NS, LIVE_SOCKS), the exit traps, now_us, variants.
source "$ROOT/scripts/lib.sh"
VEIL="$ROOT/target/release/veil"
FLOOD="$ROOT/target/release/examples/flood"
WGGO="$(command -v wireguard-go || true)"
ONLY="veil,wireguard-go"
RATE=200000
PORTS=256
DURATION=10
WAIT_NEW=20
ROUNDS=1
VARIANTS=()
declare -A VARIANT_ENV=()

while [ $# -gt 0 ]; do
    case "$1" in
        --only) ONLY="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --ports) PORTS="$2"; shift 2 ;;
        --time) DURATION="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --variant) VARIANTS+=("${2:?--variant needs LABEL=VAR=VALUE}"); shift 2 ;;
        *) sed -n '2,/^set -uo/p' "$0" | sed 's/^# \{0,1\}//;$d' >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "flood.sh: needs root" >&2; exit 1; }
for t in ip iperf3 ping wg python3; do
    command -v "$t" >/dev/null || { echo "flood.sh: $t not found" >&2; exit 1; }
done
# Both programs: `veil IFNAME` execs the veil-daemon beside it.
(cd "$ROOT" && cargo build --release --bins --example flood) || exit 1

WORK="$(mktemp -d)"

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }
wait_sock() {
    local n
    for n in $(seq 1 500); do [ -S "$1" ] && return 0; sleep 0.01; done
    return 1
}
wait_link_up() {
    local n
    for n in $(seq 1 100); do
        ip -n "$1" -o link show dev "$2" 2>/dev/null | grep -q 'state UP' && return 0
        sleep 0.02
    done
    return 1
}
iperf_gbps() {
    timeout $((DURATION + 20)) ip netns exec "$1" iperf3 -c 10.99.1.2 -t "$DURATION" -J \
        --connect-timeout 3000 >"$WORK/iperf.json" 2>/dev/null
    python3 -c 'import json,sys
try: print("%.3f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))
except Exception: print("-")' "$WORK/iperf.json"
}

# Starts implementation $1 as interface $2 in namespace $3 (a child of this shell); its pid goes
# to DAEMON_PID.
DAEMON_PID=""
start_daemon() {
    case "$1" in
        veil) ip netns exec "$3" "$VEIL" -f "$2" >"$WORK/$2.log" 2>&1 & ;;
        veil\[*)
            variant_split "$1" "$VEIL"
            ip netns exec "$3" env "${VARIANT_VARS[@]+"${VARIANT_VARS[@]}"}" "$VARIANT_BIN" -f "$2" >"$WORK/$2.log" 2>&1 &
            ;;
        wireguard-go) ip netns exec "$3" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
            "$WGGO" -f "$2" >"$WORK/$2.log" 2>&1 & ;;
    esac
    DAEMON_PID=$!
}

run_one() {
    local impl="$1" tag="fl$$" ns x
    local nsa="${tag}a" nsb="${tag}b" nsc="${tag}c" nsf="${tag}f"
    for ns in "$nsa" "$nsb" "$nsc" "$nsf"; do
        ip netns add "$ns" || return 1
        LIVE_NS+=("$ns")
        ip -n "$ns" link set lo up
    done
    local i=1
    for ns in "$nsa" "$nsc" "$nsf"; do
        ip link add "v$tag$i" netns "$ns" type veth peer name "w$tag$i" netns "$nsb" || return 1
        ip -n "$ns" addr add "10.97.$i.1/24" dev "v$tag$i"
        ip -n "$nsb" addr add "10.97.$i.2/24" dev "w$tag$i"
        ip -n "$ns" link set "v$tag$i" up
        ip -n "$nsb" link set "w$tag$i" up
        i=$((i + 1))
    done
    for x in 1 2 3; do wait_link_up "$nsb" "w$tag$x"; done
    local ka kb kc pa pb pc
    ka="$(wg genkey)"; kb="$(wg genkey)"; kc="$(wg genkey)"
    pa="$(wg pubkey <<<"$ka")"; pb="$(wg pubkey <<<"$kb")"; pc="$(wg pubkey <<<"$kc")"
    local -A pid
    for x in a b c; do
        local ns_var="ns$x"
        start_daemon "$impl" "${tag}t$x" "${!ns_var}"
        pid[$x]="$DAEMON_PID"
        LIVE_PIDS+=("${pid[$x]}")
        LIVE_SOCKS+=("/var/run/wireguard/${tag}t$x.sock")
        wait_sock "/var/run/wireguard/${tag}t$x.sock" || { echo "$impl: no UAPI socket for $x" >&2; return 1; }
    done
    echo "$ka" >"$WORK/ka"; echo "$kb" >"$WORK/kb"; echo "$kc" >"$WORK/kc"
    ip netns exec "$nsa" wg set "${tag}ta" private-key "$WORK/ka" listen-port 51820 \
        peer "$pb" endpoint 10.97.1.2:51820 allowed-ips 10.99.1.2/32
    ip netns exec "$nsb" wg set "${tag}tb" private-key "$WORK/kb" listen-port 51820 \
        peer "$pa" allowed-ips 10.99.1.1/32 peer "$pc" allowed-ips 10.99.1.3/32
    ip netns exec "$nsc" wg set "${tag}tc" private-key "$WORK/kc" listen-port 51820 \
        peer "$pb" endpoint 10.97.2.2:51820 allowed-ips 10.99.1.2/32
    local n=1
    for x in a b c; do
        local ns_var="ns$x"
        ip -n "${!ns_var}" addr add "10.99.1.$n/24" dev "${tag}t$x"
        ip -n "${!ns_var}" link set "${tag}t$x" mtu 1420 up
        n=$((n + 1))
    done
    ip netns exec "$nsa" ping -n -q -c 1 -w 10 10.99.1.2 >/dev/null 2>&1 || { echo "$impl: A cannot reach B" >&2; return 1; }
    ip netns exec "$nsb" iperf3 -s -B 10.99.1.2 >/dev/null 2>&1 &
    LIVE_PIDS+=("$!")
    for x in $(seq 1 100); do ip netns exec "$nsb" ss -ltn 2>/dev/null | grep -q ":5201 " && break; sleep 0.05; done

    local base loaded new ratio rss hwm load
    base="$(iperf_gbps "$nsa")"
    sleep 1
    ip netns exec "$nsf" "$FLOOD" --to 10.97.3.2:51820 --key "$pb" --rate "$RATE" --ports "$PORTS" \
        --seconds $((DURATION + WAIT_NEW + 5)) >"$WORK/flood.out" 2>&1 &
    local fpid=$!
    LIVE_PIDS+=("$fpid")
    sleep 1
    local t0 out
    t0="$(now_us)"
    out="$(ip netns exec "$nsc" ping -n -c 1 -W "$WAIT_NEW" 10.99.1.2 2>/dev/null)"
    if [[ "$out" =~ time=([0-9.]+)\ ms ]]; then
        new="$(python3 -c "print('%.3f s' % (${BASH_REMATCH[1]} / 1000))")"
    else
        new=">${WAIT_NEW} s (no reply; waited $(( ($(now_us) - t0) / 1000 )) ms)"
    fi
    loaded="$(iperf_gbps "$nsa")"
    rss="$(status_kib "${pid[b]}" VmRSS)"
    hwm="$(status_kib "${pid[b]}" VmHWM)"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    # What B's kernel dropped at its UDP receive buffers (the count is per namespace).
    local rcvbuf
    rcvbuf="$(ip netns exec "$nsb" awk '$1 == "Udp:" && !h {for (i = 1; i <= NF; i++) c[$i] = i; h = 1; next}
        $1 == "Udp:" {print $c["RcvbufErrors"]}' /proc/net/snmp)"
    stop_pid "$fpid"
    ratio="$(python3 -c "
try: print('%.2f' % ($loaded / $base))
except Exception: print('-')")"
    printf '%-13s base %s Gbit/s | flood: new handshake %s, tunnel %s Gbit/s (%s of base) | B RSS %s KiB, peak %s KiB | flooder: %s | B rcvbuf drops %s | load %s\n' \
        "$impl" "$base" "$new" "$loaded" "$ratio" "$rss" "$hwm" "$(tail -n 1 "$WORK/flood.out")" "$rcvbuf" "$load"
    teardown
}

echo "flood.sh $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); rate $RATE/s from $PORTS ports, iperf3 -t $DURATION"
IFS=',' read -r -a wanted <<<"$ONLY"
impls=()
for impl in "${wanted[@]}"; do
    if [ "$impl" = wireguard-go ] && [ -z "$WGGO" ]; then
        echo "wireguard-go: not installed (apt-get install wireguard-go), skipped"
        continue
    fi
    impls+=("$impl")
    if [ "$impl" = veil ]; then
        for v in "${VARIANTS[@]+"${VARIANTS[@]}"}"; do
            variant_register "$v"
            impls+=("$VARIANT_NAME")
        done
    fi
done
for round in $(seq 1 "$ROUNDS"); do
    [ "$ROUNDS" = 1 ] || echo "round $round of $ROUNDS"
    for impl in "${impls[@]}"; do
        run_one "$impl" || { echo "$impl: setup failed" >&2; teardown; }
    done
done
