#!/usr/bin/env bash
# Tunnel throughput, side by side: veil against wireguard-go, boringtun and gotatun.
#
# For each implementation (the same one on both ends) and each round, this creates two fresh
# network namespaces A and B joined by a veth pair (10.98.0.1 <-> 10.98.0.2), starts one tunnel
# daemon in each, configures both with `wg set` (fresh keys from `wg genkey`, MTU 1420, tunnel
# 10.99.0.1 <-> 10.99.0.2) and measures, through the tunnel (the tests of --tests, default all):
#   startup  time to first ping (ms): from launching the first daemon to the first echo reply
#            through the tunnel, done as a test harness would (examples/first_ping.rs, the same
#            for every implementation): both daemons started in their namespaces directly
#            (setns, then exec), configured through their UAPI sockets (no `wg`), address, MTU
#            and link up through rtnetlink (no `ip`), one ICMP echo from a raw socket every
#            100 ms until the reply. Shown apart: "sockets up" (both UAPI sockets accept, polled
#            every 0.1 ms) and "configured to first reply" (ARP on the veth, the handshake, the
#            echo). In +N rows (and with --startup-tools) the tools do it instead: `ip netns
#            exec` launches, `wg set`, `wg addconf` of the N peers on both one after the other,
#            `ip addr`/`ip link`, and `ping -i 0.01 -c 1 -w 10`, which add some 25 ms. Right
#            after that reply: idle RSS (VmRSS of each daemon, configured and handshaken,
#            before any bulk traffic).
#   ping     round trip at idle, average and maximum of 20 pings 50 ms apart (10 with --quick).
#   tcp      iperf3 TCP A -> B, 1 stream then 4 streams (-P 4): receiver Gbit/s; TCP
#            retransmissions of the 1-stream run (end.sum_sent.retransmits).
#   reverse  iperf3 -R, 1 stream, B -> A: receiver Gbit/s and retransmissions.
#   udp      iperf3 -u A -> B at a fixed offered rate (--udp-rate, default 3G) with 1380-byte
#            datagrams (fit the 1420 tunnel MTU): received Gbit/s, received packets/s, loss %.
# Also, in every round: CPU seconds (user+sys, /proc/PID/stat) of both daemons together, taken
# around each TCP run (tcp and reverse, whichever ran; not udp, not the pauses between runs),
# and per GiB received over those runs; peak RSS (VmHWM) of each daemon after all the runs.
# A reference row does the same over the bare veth (no tunnel).
#
# --peers N (default 0) adds, for every implementation, a row "IMPL (+N peers)" in the same
# interleaved rounds: before the measurements, both daemons get N extra idle peers with
# `wg addconf` (random public keys generated once per run, one /32 each from 10.200.0.0/16 on A
# and 10.201.0.0/16 on B, endpoints 10.98.x.y:port routed to the other namespace, which drops
# them; no keepalive). Each addconf is bounded by 60 s; a failure or timeout is reported as the
# round's status. The time it took (the slower daemon) is its own column.
#
# Rounds are interleaved (bare A A+N B B+N ..., then again) so that noise on the machine hits
# every implementation alike; the tables report the median of the rounds for every figure (a
# figure that failed in a round is left out), then ratios to veil, then (with --peers) each
# implementation with N peers against itself without, then every round's raw figures. The
# machine is noisy: compare ratios within one run, not absolute figures across runs.
#
# Usage: sudo scripts/bench.sh [--quick] [--only veil,wireguard-go,boringtun,gotatun]
#                              [--tests tcp,reverse,udp,ping,startup] [--rounds N]
#                              [--time SECONDS] [--peers N] [--udp-rate RATE] [--chart FILE.svg]
#                              [--variant LABEL=VAR=VALUE[,VAR=VALUE...]]... [--startup-tools]
#   --quick         iperf3 -t 2 and 10 pings (unless --time is given)
#   --only LIST     implementations to run (default all four), beside the bare veth row (which
#                   runs unless startup is the only test)
#   --tests LIST    tests to run (default all). Time to first ping is taken on every daemon start
#                   (it is how the script waits for the tunnel) and shown when startup is listed;
#                   idle and peak RSS are always shown. `--tests startup` alone is the cheapest
#                   check: it starts and configures the daemons and runs no traffic.
#   --rounds N      interleaved rounds (default 3)
#   --time SECONDS  iperf3 -t of each run (default 5)
#   --peers N       also run every implementation with N extra idle peers (0-65536)
#   --variant L=ENV also run veil with environment ENV (comma-separated VAR=VALUE) as the
#                   row "veil[L]", right after veil, to compare settings in one run; repeatable.
#                   VEIL_BIN=PATH among them runs that build of veil instead (compare commits)
#   --udp-rate RATE iperf3 -b for the udp test (default 3G)
#   --chart FILE    also write an SVG bar chart: TCP 1 stream, 4 streams, reverse, CPU s per GiB
#   --startup-tools start and configure every row with the tools (ip netns exec, wg, ip, ping)
# Each tunnel row costs about 4 x --time + 5 s per round here (24 s by default, 12 s with
# --quick): a default run (3 rounds, all tests, bare + 4 implementations) takes about 6 minutes,
# --quick about 3, --quick --rounds 1 one; --peers N nearly doubles that (4 more rows per round,
# each also loading the N peers: about 2 s for 10,000).
# Needs root, iproute2, iperf3, ping, wg, python3; the peer implementations it cannot find are
# reported and skipped. Everything runs in namespaces this script creates and removes.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# stop_pid, teardown (of LIVE_PIDS, LIVE_NS, LIVE_SOCKS), the exit traps, now_us, variants.
source "$ROOT/scripts/lib.sh"
VEIL="$ROOT/target/release/veil"
ALL_IMPLS="veil,wireguard-go,boringtun,gotatun"
ALL_TESTS="startup,ping,tcp,reverse,udp"
ONLY="$ALL_IMPLS"
TESTS="$ALL_TESTS"
ROUNDS=3
DURATION=5
DURATION_SET=0
PINGS=20
QUICK=0
PEERS=0
PEERS_TIMEOUT=60
VARIANTS=()
declare -A VARIANT_ENV=()
UDP_RATE=3G
UDP_LEN=1380
CHART=""
STARTUP_TOOLS=0

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --only=*) ONLY="${1#--only=}" ;;
        --tests) TESTS="${2:?--tests needs a list}"; shift ;;
        --tests=*) TESTS="${1#--tests=}" ;;
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --rounds=*) ROUNDS="${1#--rounds=}" ;;
        --time) DURATION="${2:?--time needs seconds}"; DURATION_SET=1; shift ;;
        --time=*) DURATION="${1#--time=}"; DURATION_SET=1 ;;
        --peers) PEERS="${2:?--peers needs a number}"; shift ;;
        --variant) VARIANTS+=("${2:?--variant needs LABEL=VAR=VALUE}"); shift ;;
        --variant=*) VARIANTS+=("${1#--variant=}") ;;
        --peers=*) PEERS="${1#--peers=}" ;;
        --udp-rate) UDP_RATE="${2:?--udp-rate needs a rate}"; shift ;;
        --udp-rate=*) UDP_RATE="${1#--udp-rate=}" ;;
        --chart) CHART="${2:?--chart needs a file name}"; shift ;;
        --chart=*) CHART="${1#--chart=}" ;;
        --startup-tools) STARTUP_TOOLS=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    [ "$DURATION_SET" = 1 ] || DURATION=2
    PINGS=10
fi
case "$ROUNDS" in ''|*[!0-9]*|0) echo "--rounds wants a positive number" >&2; exit 2 ;; esac
case "$DURATION" in ''|*[!0-9]*|0) echo "--time wants a positive number of seconds" >&2; exit 2 ;; esac
case "$PEERS" in ''|*[!0-9]*) echo "--peers wants a number" >&2; exit 2 ;; esac
if [ "${#PEERS}" -gt 6 ] || [ "$PEERS" -gt 65536 ]; then
    echo "--peers: at most 65536 (one /16 of allowed IPs per side)" >&2
    exit 2
fi
PEERS=$((10#$PEERS))
if ! [[ "$UDP_RATE" =~ ^[0-9]+(\.[0-9]+)?[KMG]?$ ]]; then
    echo "--udp-rate wants an iperf3 rate such as 3G or 500M" >&2
    exit 2
fi
if [ -n "$CHART" ] && [ ! -w "$(dirname -- "$CHART")" ]; then
    echo "--chart: cannot write $CHART" >&2
    exit 2
fi

has_test() {
    case ",$TESTS," in *",$1,"*) return 0 ;; esac
    return 1
}
IFS=',' read -r -a wanted_tests <<<"$TESTS"
for t in "${wanted_tests[@]}"; do
    case ",$ALL_TESTS," in
        *",$t,"*) ;;
        *) echo "unknown test in --tests: $t (known: $ALL_TESTS)" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    echo "bench.sh needs root (network namespaces, TUN devices)" >&2
    exit 1
fi
for tool in ip iperf3 ping wg python3 timeout ss; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "missing tool: $tool" >&2
        exit 1
    fi
done

# Which implementations to run, in a fixed order.
IMPLS=()
IFS=',' read -r -a wanted <<<"$ONLY"
for name in veil wireguard-go boringtun gotatun; do
    for w in "${wanted[@]}"; do
        if [ "$w" = "$name" ]; then
            IMPLS+=("$name")
        fi
    done
    if [ "$name" = veil ]; then
        for v in "${VARIANTS[@]+"${VARIANTS[@]}"}"; do
            variant_register "$v"
            IMPLS+=("$VARIANT_NAME")
        done
    fi
done
for w in "${wanted[@]}"; do
    case ",$ALL_IMPLS," in
        *",$w,"*) ;;
        *) echo "unknown implementation in --only: $w (known: $ALL_IMPLS)" >&2; exit 2 ;;
    esac
done

BORINGTUN="$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")"
GOTATUN="$(command -v gotatun || echo "$HOME/.cargo/bin/gotatun")"
WGGO="$(command -v wireguard-go || echo /usr/bin/wireguard-go)"

for i in "${IMPLS[@]}"; do
    if [ "${i%%\[*}" = veil ] && [ ! -x "$VEIL" ]; then
        echo "building target/release/veil ..." >&2
        (cd "$ROOT" && cargo build --release) >&2 || { echo "cargo build --release failed" >&2; exit 1; }
    fi
done

FIRST_PING="$ROOT/target/release/examples/first_ping"
if [ ! -x "$FIRST_PING" ] || [ "$ROOT/examples/first_ping.rs" -nt "$FIRST_PING" ]; then
    echo "building examples/first_ping ..." >&2
    (cd "$ROOT" && cargo build --release --example first_ping) >&2 \
        || { echo "cargo build --release --example first_ping failed" >&2; exit 1; }
fi

WORK="$(mktemp -d "/tmp/veil-bench.$$.XXXXXX")"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
HZ="$(getconf CLK_TCK)"

# utime+stime of a process in clock ticks (all its threads, dead ones included).
cpu_ticks() {
    local stat f
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    # after "pid (comm) " comes field 3 (state); utime is field 14, stime field 15.
    read -r -a f <<<"${stat##*) }"
    echo $(( f[11] + f[12] ))
}

# A field of /proc/PID/status in KiB (VmHWM, VmRSS), or "-".
status_kib() {
    local v
    v="$(awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null)"
    echo "${v:--}"
}

# Starts a daemon for implementation $1 with interface $2 in namespace $3 (a child of this
# shell: `ip netns exec` execs the daemon in place); its pid goes to DAEMON_PID.
DAEMON_PID=""
start_daemon() {
    local impl="$1" ifname="$2" ns="$3" words=()
    read -r -a words <<<"$(impl_words "$impl")"
    words=("${words[@]//\{if\}/$ifname}")
    # Leading NAME=value words are the environment: through env(1) when there are any.
    [[ "${words[0]}" == *=* ]] && words=(env "${words[@]}")
    ip netns exec "$ns" "${words[@]}" >"$WORK/$ifname.log" 2>&1 &
    DAEMON_PID=$!
}

# The command line of implementation $1's daemon as words for examples/first_ping: leading
# NAME=value words are its environment, `{if}` stands for the interface name.
impl_words() {
    case "$1" in
        veil) echo "$VEIL -f {if}" ;;
        veil\[*)
            variant_split "$1" "$VEIL"
            echo "${VARIANT_VARS[*]+"${VARIANT_VARS[*]} "}$VARIANT_BIN -f {if}"
            ;;
        wireguard-go) echo "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 $WGGO -f {if}" ;;
        boringtun) echo "WG_SUDO=true $BORINGTUN -f --disable-drop-privileges -l $WORK/{if}.btlog {if}" ;;
        gotatun) echo "WG_SUDO=true $GOTATUN -f --disable-drop-privileges -l $WORK/{if}.gtlog {if}" ;;
    esac
}

# Milliseconds with one decimal from microseconds $1.
us_to_ms() {
    printf '%d.%d' "$(($1 / 1000))" "$((($1 % 1000) / 100))"
}

impl_bin() {
    case "$1" in
        veil|veil\[*) echo "$VEIL" ;;
        wireguard-go) echo "$WGGO" ;;
        boringtun) echo "$BORINGTUN" ;;
        gotatun) echo "$GOTATUN" ;;
    esac
}

# Waits (bounded, 5 s) for a UAPI socket $1 of daemon $2 to appear (looked at every 1 ms, so
# the wait adds little to the start-up figures).
wait_sock() {
    local n
    for n in $(seq 1 5000); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.001
    done
    [ -S "$1" ]
}

# What implementation $1 logs once it can be configured, empty when its socket accepting is
# enough: gotatun 0.10 opens its UAPI socket before its device is built and dies if a client
# connects in between (docs/lab.md, `ready`).
ready_text() {
    [ "$1" = gotatun ] && echo "started successfully"
    return 0
}

# Waits (bounded, 5 s) until daemon $3 of implementation $1 has logged its ready_text in
# interface $2's log. Implementations without one: at once.
wait_ready() {
    local n text
    text="$(ready_text "$1")"
    [ -n "$text" ] || return 0
    for n in $(seq 1 5000); do
        grep -qF "$text" "$WORK/$2.log" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.001
    done
    return 1
}

# Waits (bounded, 2 s) until link $2 in namespace $1 is up (a fresh veth drops early packets).
wait_link_up() {
    local n
    for n in $(seq 1 100); do
        ip -n "$1" -o link show dev "$2" 2>/dev/null | grep -q 'state UP' && return 0
        sleep 0.02
    done
    return 1
}

# Waits (bounded) until namespace $1 can ping $2.
wait_ping() {
    local n
    for n in $(seq 1 20); do
        if ip netns exec "$1" ping -c 1 -W 1 -q "$2" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# Prints "avg max" in ms of $PINGS pings from namespace $1 to $2, or "- -".
measure_ping() {
    local out
    out="$(timeout 30 ip netns exec "$1" ping -n -c "$PINGS" -i 0.05 -W 1 "$2" 2>/dev/null)"
    python3 -c '
import re, sys
t = [float(x) for x in re.findall(r"time=([0-9.]+) ms", sys.stdin.read())]
print("%.3f %.3f" % (sum(t) / len(t), max(t)) if t else "- -")
' <<<"$out"
}

# Runs iperf3 from namespace $1 to $2 with the further arguments given and prints, from its JSON:
# TCP: "Gbit/s bytes retransmits" (receiver side; retransmits of the sender, whichever end it is);
# UDP (-u among the arguments): "received-Gbit/s received-packets/s loss-% sent-Gbit/s";
# "-" for each figure when the run failed.
measure_iperf() {
    local nsc="$1" dst="$2" json
    shift 2
    json="$WORK/iperf.$RUN.$RANDOM.json"
    timeout $((DURATION + 20)) ip netns exec "$nsc" \
        iperf3 -c "$dst" -t "$DURATION" -J --connect-timeout 3000 "$@" >"$json" 2>/dev/null
    python3 - "$json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    e = d["end"]
    r = e["sum_received"]
    if d["start"]["test_start"]["protocol"] == "UDP":
        got = r["packets"] - r["lost_packets"]
        print("%.3f %.0f %.2f %.3f" % (r["bits_per_second"] / 1e9, got / r["seconds"],
                                       r["lost_percent"], e["sum_sent"]["bits_per_second"] / 1e9))
    else:
        print("%.3f %d %d" % (r["bits_per_second"] / 1e9, r["bytes"], e["sum_sent"]["retransmits"]))
except Exception:
    print("- - - - -")
PY
    rm -f "$json"
}

# Extra idle peers for --peers: one config file per side, generated once per run.
if [ "$PEERS" -gt 0 ]; then
    python3 - "$PEERS" "$WORK/peers-a.conf" "$WORK/peers-b.conf" <<'PY' || exit 1
import base64, os, sys
n = int(sys.argv[1])
for path, net in ((sys.argv[2], 200), (sys.argv[3], 201)):
    with open(path, "w") as f:
        for i in range(n):
            f.write("[Peer]\nPublicKey = %s\nAllowedIPs = 10.%d.%d.%d/32\nEndpoint = 10.98.%d.%d:%d\n\n" % (
                base64.b64encode(os.urandom(32)).decode(), net, i >> 8, i & 255,
                1 + (i // 254) % 254, 1 + i % 254, 40000 + i // (254 * 254)))
PY
fi

# State of the measurement under way, for the helpers below.
RUN=0
LINE=""
PROBLEMS=()
PIDA=""
PIDB=""
CPU_TICKS=0
TCP_BYTES=0

res() { LINE+=$'\t'"$1=$2"; }
problem() { PROBLEMS+=("$1"); }

daemons_cpu() {
    if [ -n "$PIDA" ]; then
        echo $(( $(cpu_ticks "$PIDA") + $(cpu_ticks "$PIDB") ))
    else
        echo 0
    fi
}

# One TCP iperf3 run named $1 from namespace $2 to $3 (further arguments to iperf3); records
# its figures and adds its daemon CPU time and bytes to the totals when it succeeded.
tcp_run() {
    local name="$1" nsc="$2" dst="$3" c0 c1 gbps bytes retr
    shift 3
    c0="$(daemons_cpu)"
    read -r gbps bytes retr _ < <(measure_iperf "$nsc" "$dst" "$@")
    c1="$(daemons_cpu)"
    if [ "$gbps" = - ]; then
        problem "$name-failed"
        return
    fi
    res "$name" "$gbps"
    res "${name}_retr" "$retr"
    CPU_TICKS=$((CPU_TICKS + c1 - c0))
    TCP_BYTES=$((TCP_BYTES + bytes))
}

# One measurement: implementation $1 ("bare" for the veth alone) with $2 extra peers, round $3.
# Appends one line of key=value fields to $RESULTS.
run_one() {
    local impl="$1" npeers="$2" round="$3"
    RUN=$((RUN + 1))
    local tag="${$}r${RUN}"
    local nsa="vbench${tag}a" nsb="vbench${tag}b"
    local vea="vbv${tag}a" veb="vbv${tag}b"
    local tuna="vbt${tag}a" tunb="vbt${tag}b"
    local dst="10.99.0.2" src_ns="$nsa" srv=""
    LINE="impl=$impl"$'\t'"peers=$npeers"$'\t'"round=$round"
    PROBLEMS=()
    PIDA=""
    PIDB=""
    CPU_TICKS=0
    TCP_BYTES=0

    LIVE_NS+=("$nsa" "$nsb")
    if ! ip netns add "$nsa" || ! ip netns add "$nsb"; then
        echo "cannot create namespaces" >&2
        exit 1
    fi
    ip link add "$vea" netns "$nsa" type veth peer name "$veb" netns "$nsb" || exit 1
    ip -n "$nsa" addr add 10.98.0.1/24 dev "$vea"
    ip -n "$nsb" addr add 10.98.0.2/24 dev "$veb"
    ip -n "$nsa" link set lo up
    ip -n "$nsb" link set lo up
    ip -n "$nsa" link set "$vea" up
    ip -n "$nsb" link set "$veb" up
    wait_link_up "$nsa" "$vea"
    wait_link_up "$nsb" "$veb"
    if [ "$npeers" -gt 0 ]; then
        # the extra peers' endpoints (10.98.1.0 and up) lead to the other namespace, which does
        # not forward: whatever is sent to them is dropped there
        ip netns exec "$nsa" sysctl -qw net.ipv4.ip_forward=0
        ip netns exec "$nsb" sysctl -qw net.ipv4.ip_forward=0
        ip -n "$nsa" route add 10.98.0.0/16 via 10.98.0.2
        ip -n "$nsb" route add 10.98.0.0/16 via 10.98.0.1
    fi

    if [ "$impl" = bare ]; then
        dst="10.98.0.2"
        wait_ping "$src_ns" "$dst" || problem "no-connectivity"
    else
        LIVE_SOCKS+=("/var/run/wireguard/$tuna.sock" "/var/run/wireguard/$tunb.sock")
    fi
    if [ "$impl" != bare ] && [ "$npeers" = 0 ] && [ "$STARTUP_TOOLS" = 0 ]; then
        # Started, configured and first pinged by examples/first_ping, which stays the
        # daemons' parent (and reaps them) until they are stopped.
        local words=() ready=() text fpout="$WORK/$tuna.first-ping" fp n
        read -r -a words <<<"$(impl_words "$impl")"
        # A daemon that says when it can be configured is configured only then (ready_text).
        text="$(ready_text "$impl")"
        [ -n "$text" ] && ready=(--ready "$text")
        "$FIRST_PING" --ns-a "$nsa" --ns-b "$nsb" --underlay-a 10.98.0.1 --underlay-b 10.98.0.2 \
            --if-a "$tuna" --if-b "$tunb" --log-a "$WORK/$tuna.log" --log-b "$WORK/$tunb.log" \
            "${ready[@]}" -- "${words[@]}" >"$fpout" 2>"$WORK/$tuna.first-ping.err" &
        fp=$!
        for n in $(seq 1 1500); do
            [ -s "$fpout" ] && break
            kill -0 "$fp" 2>/dev/null || break
            sleep 0.01
        done
        local ready configured reply
        if read -r PIDA PIDB ready configured reply <"$fpout" && [ -n "$reply" ]; then
            LIVE_PIDS+=("$PIDA" "$PIDB" "$fp")
            res ready_ms "$(us_to_ms "$ready")"
            res startup_ms "$(us_to_ms "$reply")"
            res tunnel_ms "$(us_to_ms "$((reply - configured))")"
            res idle_rss_a "$(status_kib "$PIDA" VmRSS)"
            res idle_rss_b "$(status_kib "$PIDB" VmRSS)"
        else
            PIDA="" PIDB=""
            LIVE_PIDS+=("$fp")
            problem "first-ping($(head -c 80 "$WORK/$tuna.first-ping.err" | tr -s '\t\n| ' ' '))"
        fi
    elif [ "$impl" != bare ]; then
        local t0 t1 ka="$WORK/$tuna.key" kb="$WORK/$tunb.key"
        (umask 077 && wg genkey >"$ka" && wg genkey >"$kb")
        local puba pubb
        puba="$(wg pubkey <"$ka")"
        pubb="$(wg pubkey <"$kb")"
        t0="$(now_us)"
        start_daemon "$impl" "$tuna" "$nsa"
        PIDA="$DAEMON_PID"
        LIVE_PIDS+=("$PIDA")
        start_daemon "$impl" "$tunb" "$nsb"
        PIDB="$DAEMON_PID"
        LIVE_PIDS+=("$PIDB")
        if ! wait_sock "/var/run/wireguard/$tuna.sock" "$PIDA" \
            || ! wait_sock "/var/run/wireguard/$tunb.sock" "$PIDB" \
            || ! wait_ready "$impl" "$tuna" "$PIDA" || ! wait_ready "$impl" "$tunb" "$PIDB"; then
            problem "daemon-did-not-start"
        else
            res ready_ms "$(( ($(now_us) - t0) / 1000 ))"
            if ! ip netns exec "$nsa" wg set "$tuna" private-key "$ka" listen-port 51820 \
                    peer "$pubb" allowed-ips 10.99.0.2/32 endpoint 10.98.0.2:51820 \
                || ! ip netns exec "$nsb" wg set "$tunb" private-key "$kb" listen-port 51820 \
                    peer "$puba" allowed-ips 10.99.0.1/32 endpoint 10.98.0.1:51820; then
                problem "wg-set-failed"
            fi
        fi
        if [ "${#PROBLEMS[@]}" = 0 ] && [ "$npeers" -gt 0 ]; then
            local side ns ifn p0 rc
            for side in a b; do
                if [ "$side" = a ]; then ns="$nsa" ifn="$tuna"; else ns="$nsb" ifn="$tunb"; fi
                p0="$(now_us)"
                timeout "$PEERS_TIMEOUT" ip netns exec "$ns" wg addconf "$ifn" "$WORK/peers-$side.conf" \
                    >"$WORK/addconf.log" 2>&1
                rc=$?
                res "peers_s_$side" "$(( ($(now_us) - p0) / 1000 ))"
                if [ "$rc" = 124 ]; then
                    problem "addconf-$side-timeout-${PEERS_TIMEOUT}s"
                elif [ "$rc" != 0 ]; then
                    problem "addconf-$side-failed($(head -c 60 "$WORK/addconf.log" | tr -s '\t\n| ' ' '))"
                fi
                [ "$rc" = 0 ] || break
            done
        fi
        if [ "${#PROBLEMS[@]}" = 0 ]; then
            ip -n "$nsa" addr add 10.99.0.1/24 dev "$tuna"
            ip -n "$nsb" addr add 10.99.0.2/24 dev "$tunb"
            ip -n "$nsa" link set "$tuna" mtu 1420 up
            ip -n "$nsb" link set "$tunb" mtu 1420 up
            local tc
            tc="$(now_us)"
            if ip netns exec "$nsa" ping -n -q -c 1 -i 0.01 -w 10 "$dst" >/dev/null 2>&1; then
                t1="$(now_us)"
                res startup_ms "$(( (t1 - t0) / 1000 ))"
                res tunnel_ms "$(( (t1 - tc) / 1000 ))"
                res idle_rss_a "$(status_kib "$PIDA" VmRSS)"
                res idle_rss_b "$(status_kib "$PIDB" VmRSS)"
            else
                problem "no-connectivity"
            fi
        fi
    fi

    if [ "${#PROBLEMS[@]}" = 0 ] && has_test ping; then
        local pavg pmax
        read -r pavg pmax < <(measure_ping "$src_ns" "$dst")
        if [ "$pavg" = - ]; then problem "ping-failed"; else res ping_avg "$pavg"; res ping_max "$pmax"; fi
    fi
    if [ "${#PROBLEMS[@]}" = 0 ] && { has_test tcp || has_test reverse || has_test udp; }; then
        ip netns exec "$nsb" iperf3 -s -B "$dst" >"$WORK/iperf-server.log" 2>&1 &
        srv=$!
        LIVE_PIDS+=("$srv")
        # bounded wait for the server to listen
        local n
        for n in $(seq 1 100); do
            ip netns exec "$nsb" ss -ltn 2>/dev/null | grep -q ":5201 " && break
            sleep 0.02
        done
        if has_test tcp; then
            tcp_run tcp1 "$src_ns" "$dst" -P 1
            sleep 0.5
            tcp_run tcp4 "$src_ns" "$dst" -P 4
            sleep 0.5
        fi
        if has_test reverse; then
            tcp_run rev "$src_ns" "$dst" -P 1 -R
            sleep 0.5
        fi
        if [ -n "$PIDA" ] && [ "$TCP_BYTES" -gt 0 ]; then
            res cpu_s "$(python3 -c "print('%.2f' % (${CPU_TICKS} / ${HZ}))")"
            res tcp_bytes "$TCP_BYTES"
        fi
        if has_test udp; then
            local ug upps uloss usent
            read -r ug upps uloss usent _ < <(measure_iperf "$src_ns" "$dst" -u -b "$UDP_RATE" -l "$UDP_LEN")
            if [ "$ug" = - ]; then
                problem "udp-failed"
            else
                res udp_gbps "$ug"; res udp_pps "$upps"; res udp_loss "$uloss"; res udp_sent "$usent"
            fi
        fi
    fi
    if [ -n "$PIDA" ]; then
        res hwm_a "$(status_kib "$PIDA" VmHWM)"
        res hwm_b "$(status_kib "$PIDB" VmHWM)"
        kill -0 "$PIDA" 2>/dev/null || problem "daemon-a-died"
        kill -0 "$PIDB" 2>/dev/null || problem "daemon-b-died"
    fi
    local status="ok"
    if [ "${#PROBLEMS[@]}" -gt 0 ]; then
        status="$(IFS=','; echo "${PROBLEMS[*]}")"
        if [ -n "$PIDA" ]; then
            {
                echo "--- $impl (+$npeers peers) round $round: $status; daemon logs:"
                tail -n 5 "$WORK/$tuna.log" "$WORK/$tunb.log" 2>/dev/null
            } >&2
        fi
    fi
    res status "$status"
    echo "$LINE" >>"$RESULTS"
    python3 - "$LINE" <<'PY' >&2
import sys
d = dict(kv.split("=", 1) for kv in sys.argv[1].split("\t"))
name = d["impl"] + (" +%s" % d["peers"] if d["peers"] != "0" else "")
g = lambda k: d.get(k, "-")
print("  round %s %-20s startup %s ms, tcp %s/%s/%s Gbit/s (1/4/rev), udp %s Gbit/s %s%% loss, ping %s ms, cpu %s s, %s"
      % (d["round"], name, g("startup_ms"), g("tcp1"), g("tcp4"), g("rev"), g("udp_gbps"),
         g("udp_loss"), g("ping_avg"), g("cpu_s"), d["status"]))
PY
    teardown
}

# Versions and machine information.
version_of() {
    local bin
    bin="$(impl_bin "$1")"
    if [ ! -x "$bin" ]; then
        echo "not found"
        return
    fi
    "$bin" --version 2>&1 | head -n 1
}

AVAILABLE=()
for i in "${IMPLS[@]}"; do
    if [ -x "$(impl_bin "$i")" ]; then
        AVAILABLE+=("$i")
    else
        echo "skipping $i: $(impl_bin "$i") not found" >&2
        printf 'impl=%s\tpeers=0\tround=0\tstatus=not-installed\n' "$i" >>"$RESULTS"
    fi
done

{
    echo "machine: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "veil commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo ' (plus uncommitted changes)')"
    for i in "${IMPLS[@]}"; do
        echo "$i: $(version_of "$i")"
    done
    line="tests: $TESTS"
    if has_test tcp || has_test reverse || has_test udp; then line+="; iperf3 -t $DURATION"; fi
    if has_test ping; then line+="; ping -c $PINGS -i 0.05"; fi
    if has_test udp; then line+="; udp: iperf3 -u -b $UDP_RATE -l $UDP_LEN"; fi
    line+="; $ROUNDS interleaved round(s)"
    if [ "$PEERS" -gt 0 ]; then line+="; $PEERS extra idle peers on both daemons in the (+$PEERS peers) rows"; fi
    echo "$line"
} >"$WORK/info.txt"
cat "$WORK/info.txt" >&2

RUN_BARE=1
if ! has_test ping && ! has_test tcp && ! has_test reverse && ! has_test udp; then
    RUN_BARE=0
fi
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    [ "$RUN_BARE" = 1 ] && run_one bare 0 "$round"
    for i in "${AVAILABLE[@]+"${AVAILABLE[@]}"}"; do
        run_one "$i" 0 "$round"
        [ "$PEERS" -gt 0 ] && run_one "$i" "$PEERS" "$round"
    done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/info.txt"

python3 - "$RESULTS" "$WORK/info.txt" "$ROUNDS" "$TESTS" "$PEERS" "$CHART" "$STARTUP_TOOLS" <<'PY'
import html, sys
from statistics import median

results, info, rounds, tests, npeers, chart, startup_tools = sys.argv[1:8]
rounds, tests, npeers = int(rounds), set(tests.split(",")), int(npeers)
rows = [dict(kv.split("=", 1) for kv in line.rstrip("\n").split("\t"))
        for line in open(results) if line.strip()]

def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None

def label(r):
    if r["impl"] == "bare":
        return "bare veth (no tunnel)"
    return r["impl"] + (" (+%s peers)" % r["peers"] if r["peers"] != "0" else "")

# Derived per-round figures.
for r in rows:
    def both(a, b, f=max):
        x, y = num(r.get(a)), num(r.get(b))
        return None if x is None or y is None else f(x, y)
    c, b = num(r.get("cpu_s")), num(r.get("tcp_bytes"))
    r["cpu_gib"] = c / (b / 2**30) if c is not None and b else None
    r["hwm"] = both("hwm_a", "hwm_b")
    r["idle_rss"] = both("idle_rss_a", "idle_rss_b")
    r["peers_s"] = both("peers_s_a", "peers_s_b")
    if r["peers_s"] is not None:
        r["peers_s"] /= 1000
    r["udp_kpps"] = num(r.get("udp_pps")) / 1000 if num(r.get("udp_pps")) is not None else None

order, by = [], {}
for r in rows:
    k = label(r)
    if k not in by:
        order.append(k)
        by[k] = []
    by[k].append(r)

def med(k, key):
    v = [num(r.get(key)) for r in by[k]]
    v = [x for x in v if x is not None]
    return median(v) if v else None

# (header, key, format, test or None for always, scale)
THROUGHPUT = [
    ("TCP 1 stream (Gbit/s)", "tcp1", "%.2f", "tcp"),
    ("TCP 4 streams (Gbit/s)", "tcp4", "%.2f", "tcp"),
    ("TCP reverse, 1 stream (Gbit/s)", "rev", "%.2f", "reverse"),
    ("retransmits 1 stream (segments)", "tcp1_retr", "%.0f", "tcp"),
    ("retransmits reverse (segments)", "rev_retr", "%.0f", "reverse"),
    ("UDP received (Gbit/s)", "udp_gbps", "%.2f", "udp"),
    ("UDP received (kpackets/s)", "udp_kpps", "%.1f", "udp"),
    ("UDP loss (%)", "udp_loss", "%.1f", "udp"),
]
COST = [
    ("ping avg (ms)", "ping_avg", "%.3f", "ping"),
    ("ping max (ms)", "ping_max", "%.3f", "ping"),
    ("CPU, TCP runs (s)", "cpu_s", "%.2f", "tcpcpu"),
    ("CPU per GiB (s/GiB)", "cpu_gib", "%.2f", "tcpcpu"),
    ("idle RSS (MiB)", "idle_rss", "%.1f", None),
    ("peak RSS (MiB)", "hwm", "%.1f", None),
    ("time to first ping (ms)", "startup_ms", "%.1f", "startup"),
    ("of which: daemons' sockets up (ms)", "ready_ms", "%.1f", "startup"),
    ("of which: configured to first reply (ms)", "tunnel_ms", "%.1f", "startup"),
    ("configure %d peers (s)" % npeers, "peers_s", "%.2f", "peers"),
]
MIB = {"idle_rss", "hwm"}
active = set(tests) | {None}
if "tcp" in tests or "reverse" in tests:
    active.add("tcpcpu")
if npeers:
    active.add("peers")
THROUGHPUT = [c for c in THROUGHPUT if c[3] in active]
COST = [c for c in COST if c[3] in active]

summary = {}
for k in order:
    s = {key: med(k, key) for _, key, _, _ in THROUGHPUT + COST}
    for key in MIB:
        if s.get(key) is not None:
            s[key] /= 1024
    rs = by[k]
    ok = [r for r in rs if r["status"] == "ok"]
    s["okc"] = "%d/%d" % (len(ok), len(rs))
    fails = sorted({r["status"] for r in rs if r["status"] != "ok"})
    if fails:
        s["okc"] += " (" + ", ".join(fails) + ")"
    summary[k] = s

def f(x, fmt):
    return "—" if x is None else fmt % x

def table(cols, extra=None):
    head = ["implementation"] + [c[0] for c in cols] + ([extra] if extra else [])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k in order:
        cells = [k] + [f(summary[k][key], fmt) for _, key, fmt, _ in cols]
        if extra:
            cells.append(summary[k]["okc"])
        print("| " + " | ".join(cells) + " |")
    print()

print("### Run information\n")
for line in open(info):
    print("- " + line.rstrip())
print()
print("Median of %d interleaved round(s) for every figure (a figure that failed in a round is left out)." % rounds)
notes = []
if "tcp" in tests:
    notes.append("TCP: iperf3 A -> B, receiver Gbit/s; retransmits: end.sum_sent.retransmits of the 1-stream run.")
if "reverse" in tests:
    notes.append("Reverse: iperf3 -R, 1 stream, B -> A; retransmits of that run.")
if "udp" in tests:
    notes.append("UDP: iperf3 -u A -> B at the offered rate above; received Gbit/s, received packets per second and loss as the receiver counts them.")
if "tcpcpu" in active:
    runs = [n for t, n in (("tcp", "1 stream"), ("tcp", "4 streams"), ("reverse", "reverse")) if t in tests]
    notes.append("CPU: user+sys seconds of both daemons together over the TCP runs (%s; not UDP, not the pauses between runs); per GiB received over those runs." % ", ".join(runs))
notes.append("Idle RSS: the larger VmRSS of the two daemons once configured (N peers included in +N rows) and handshaken, before bulk traffic; peak RSS: the larger VmHWM after all the runs.")
if "startup" in tests:
    tools = "both process starts through `ip netns exec`, UAPI socket waits (1 ms polls), wg set on both, ip addr/link, the handshake and `ping`"
    if startup_tools == "1":
        how = "with the tools: " + tools
    else:
        how = ("as a test harness would (examples/first_ping): both daemons exec'd in their namespaces, configured through their UAPI sockets, "
               "address and link up through rtnetlink, one ICMP echo from a raw socket every 100 ms; it includes ARP, the handshake and the echo")
        if npeers:
            how += "; in +N rows with the tools: " + tools + ", and wg addconf of the N peers on both daemons one after the other"
    notes.append("Time to first ping: from launching the first daemon to the first echo reply through the tunnel, " + how + ".")
if npeers:
    notes.append("Configure N peers: wall time of `wg addconf` with %d peers, the slower of the two daemons (bounded by 60 s)." % npeers)
for n in notes:
    print("- " + n)
print()
if THROUGHPUT:
    table(THROUGHPUT, "rounds ok")
    table(COST)
else:
    table(COST, "rounds ok")

def ratio(a, b):
    return "—" if a is None or b in (None, 0) else "%.2f" % (a / b)

RATIO = [c for c in THROUGHPUT if c[1] in ("tcp1", "tcp4", "rev", "udp_gbps")] + \
        [c for c in COST if c[1] in ("ping_avg", "cpu_gib", "idle_rss", "hwm", "startup_ms")]
v = summary.get("veil")
if v and any(v.get(c[1]) is not None for c in RATIO):
    print("Relative to veil (>1: more throughput, longer round trip, more CPU per GiB, more memory, slower start):\n")
    head = ["implementation"] + [c[0].split(" (")[0] for c in RATIO]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k in order:
        print("| " + " | ".join([k] + [ratio(summary[k][c[1]], v[c[1]]) for c in RATIO]) + " |")
    print()
else:
    print("No ratios: veil was not run or had no successful round.\n")

if npeers:
    print("With %d peers relative to the same implementation without (>1: more of it with the peers):\n" % npeers)
    head = ["implementation"] + [c[0].split(" (")[0] for c in RATIO]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for k in order:
        if not k.endswith(" (+%d peers)" % npeers):
            continue
        base = summary.get(k[: -len(" (+%d peers)" % npeers)])
        if base:
            print("| " + " | ".join([k] + [ratio(summary[k][c[1]], base[c[1]]) for c in RATIO]) + " |")
    print()

# Per round, every figure as measured (RSS in KiB for each daemon, A+B).
RAW = [
    ("TCP 1 stream (Gbit/s)", "tcp1", "tcp"), ("TCP 4 streams (Gbit/s)", "tcp4", "tcp"),
    ("TCP reverse (Gbit/s)", "rev", "reverse"), ("retransmits 1 stream (segments)", "tcp1_retr", "tcp"),
    ("retransmits reverse (segments)", "rev_retr", "reverse"), ("UDP sent (Gbit/s)", "udp_sent", "udp"),
    ("UDP received (Gbit/s)", "udp_gbps", "udp"), ("UDP received (packets/s)", "udp_pps", "udp"),
    ("UDP loss (%)", "udp_loss", "udp"), ("ping avg (ms)", "ping_avg", "ping"), ("ping max (ms)", "ping_max", "ping"),
    ("CPU, TCP runs (s)", "cpu_s", "tcpcpu"), ("first ping (ms)", "startup_ms", "startup"),
]
raw = [("round", lambda r: r["round"])]
raw += [(h, (lambda key: lambda r: r.get(key, "-"))(key)) for h, key, t in RAW if t in active]
if "tcpcpu" in active:
    raw.append(("TCP received (MiB)", lambda r: "%.0f" % (int(r["tcp_bytes"]) / 2**20) if "tcp_bytes" in r else "-"))
raw.append(("idle RSS A+B (KiB)", lambda r: "%s+%s" % (r.get("idle_rss_a", "-"), r.get("idle_rss_b", "-"))))
raw.append(("VmHWM A+B (KiB)", lambda r: "%s+%s" % (r.get("hwm_a", "-"), r.get("hwm_b", "-"))))
if npeers:
    raw.append(("addconf A+B (ms)", lambda r: "%s+%s" % (r.get("peers_s_a", "-"), r.get("peers_s_b", "-"))))
raw.append(("status", lambda r: r["status"]))
print("Per round, as measured:\n")
print("| implementation | " + " | ".join(h for h, _ in raw) + " |")
print("|---|" + "---|" * len(raw))
for k in order:
    for r in sorted(by[k], key=lambda r: int(r["round"])):
        print("| %s | %s |" % (k, " | ".join(str(g(r)) for _, g in raw)))
print()

if chart:
    bars = [c for c in (("tcp1", "TCP 1 stream"), ("tcp4", "TCP 4 streams"), ("rev", "TCP reverse"))
            if any(summary[k].get(c[0]) is not None for k in order)]
    names = [k for k in order if not k.startswith("bare")]
    colors = ["#4e79a7", "#59a14f", "#f28e2b"]
    top, ph = 80, 260
    pw1, pw2 = 500, 320
    x1, x2 = 70, 70 + pw1 + 80
    W = x2 + pw2 + 30
    H = top + ph + 170
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>']
    date = [l.strip() for l in open(info) if l.startswith("date:")]
    out.append('<text x="10" y="22" font-size="16" font-weight="bold">Tunnel throughput and CPU cost, side by side (median of %d round(s))</text>' % rounds)
    out.append('<text x="10" y="42" fill="#555">%s</text>' % html.escape("; ".join(date + ["same implementation on both ends, 2 namespaces joined by a veth"])))
    def panel(x0, pw, title, series, unit):
        vals = [summary[k].get(key) for k in names for key, _, _ in series]
        vmax = max([x for x in vals if x is not None] or [1]) * 1.15
        gw = pw / max(len(names), 1)
        bw = min(gw * 0.8 / max(len(series), 1), 48)
        y0 = top + ph
        out.append('<text x="%d" y="%d" font-weight="bold">%s</text>' % (x0, top - 8, html.escape(title)))
        for t in range(6):
            v = vmax * t / 5
            y = y0 - ph * t / 5
            out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (x0, x0 + pw, y, y))
            out.append('<text x="%d" y="%.1f" text-anchor="end" fill="#555">%s</text>'
                       % (x0 - 4, y + 4, "%.0f" % v if vmax >= 50 else "%.1f" % v if vmax >= 5 else "%.2f" % v))
        out.append('<text x="%d" y="%d" transform="rotate(-90 %d %d)" text-anchor="middle" fill="#555">%s</text>'
                   % (x0 - 45, y0 - ph // 2, x0 - 45, y0 - ph // 2, html.escape(unit)))
        for i, k in enumerate(names):
            gx = x0 + i * gw + gw * 0.1
            for j, (key, _, color) in enumerate(series):
                v = summary[k].get(key)
                if v is None:
                    continue
                h = ph * v / vmax
                bx = gx + j * bw
                out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (bx, y0 - h, bw - 1, h, color))
                out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9">%.2f</text>' % (bx + bw / 2, y0 - h - 3, v))
            cx = x0 + i * gw + gw / 2
            out.append('<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-35 %.1f %d)">%s</text>'
                       % (cx, y0 + 14, cx, y0 + 14, html.escape(k)))
        out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>' % (x0, x0 + pw, y0, y0))
    if bars:
        panel(x1, pw1, "TCP throughput (Gbit/s, higher is better)",
              [(key, name, colors[i]) for i, (key, name) in enumerate(bars)], "Gbit/s")
        for i, (key, name) in enumerate(bars):
            out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>'
                       % (x1 + i * 130, H - 22, colors[i], x1 + i * 130 + 16, H - 12, html.escape(name)))
        b = summary.get("bare veth (no tunnel)")
        if b:
            out.append('<text x="%d" y="%d" fill="#555">bare veth: %s</text>' % (x1, H - 40, ", ".join(
                "%s %s Gbit/s" % (name, f(b.get(key), "%.1f")) for key, name in bars)))
    if any(summary[k].get("cpu_gib") is not None for k in names):
        panel(x2, pw2, "CPU per GiB carried (lower is better)",
              [("cpu_gib", "CPU s/GiB", "#e15759")], "CPU s per GiB, both daemons")
    out.append("</svg>")
    with open(chart, "w") as fh:
        fh.write("\n".join(out) + "\n")
    print("Chart written to %s." % chart, file=sys.stderr)
PY
