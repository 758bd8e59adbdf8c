#!/usr/bin/env bash
# Tunnel throughput, side by side: veil against wireguard-go, boringtun and gotatun.
#
# For each implementation (the same one on both ends) and each round, this creates two fresh
# network namespaces joined by a veth pair, starts one tunnel daemon in each, configures both
# with `wg` (fresh keys from `wg genkey`, MTU 1420, tunnel 10.99.0.1 <-> 10.99.0.2) and
# measures, through the tunnel:
#   - iperf3 TCP throughput, 1 stream and 4 streams (-P 4), namespace A -> namespace B;
#   - ping round trip (average and maximum) at idle;
#   - CPU seconds (user+sys) of both daemons over the two iperf3 runs, from /proc/PID/stat,
#     and the same per GiB carried;
#   - peak resident memory (VmHWM) of each daemon at the end of the run.
# A reference row does the same over the bare veth (no tunnel). Rounds are interleaved
# (bare A B C D, bare A B C D, ...) so that noise on the machine hits every implementation
# alike; the table reports the median of the rounds for every figure, and the per-round raw
# figures follow it.
#
# Usage: sudo scripts/bench.sh [--quick] [--only veil,wireguard-go,boringtun,gotatun]
#                              [--rounds N] [--time SECONDS]
# Needs root, iproute2, iperf3, ping, wg, python3; the peer implementations it cannot find are
# reported and skipped. Everything runs in namespaces this script creates and removes.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VEIL="$ROOT/target/release/veil"
ALL_IMPLS="veil,wireguard-go,boringtun,gotatun"
ONLY="$ALL_IMPLS"
ROUNDS=3
DURATION=5
PINGS=20
QUICK=0

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --only=*) ONLY="${1#--only=}" ;;
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --rounds=*) ROUNDS="${1#--rounds=}" ;;
        --time) DURATION="${2:?--time needs seconds}"; shift ;;
        --time=*) DURATION="${1#--time=}" ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DURATION=2
    PINGS=10
fi
case "$ROUNDS" in ''|*[!0-9]*|0) echo "--rounds wants a positive number" >&2; exit 2 ;; esac
case "$DURATION" in ''|*[!0-9]*|0) echo "--time wants a positive number of seconds" >&2; exit 2 ;; esac

if [ "$(id -u)" != 0 ]; then
    echo "bench.sh needs root (network namespaces, TUN devices)" >&2
    exit 1
fi
for tool in ip iperf3 ping wg python3 timeout; do
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
    if [ "$i" = veil ] && [ ! -x "$VEIL" ]; then
        echo "building target/release/veil ..." >&2
        (cd "$ROOT" && cargo build --release) >&2 || { echo "cargo build --release failed" >&2; exit 1; }
    fi
done

WORK="$(mktemp -d "/tmp/veil-bench.$$.XXXXXX")"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
HZ="$(getconf CLK_TCK)"

# Everything live at the moment; the cleanup removes whatever is listed here.
LIVE_PIDS=()
LIVE_NS=()
LIVE_SOCKS=()

stop_pid() {
    local pid="$1" n
    kill -TERM "$pid" 2>/dev/null || return 0
    for n in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
        [ "$n" = 30 ] && kill -KILL "$pid" 2>/dev/null
    done
    wait "$pid" 2>/dev/null
    return 0
}

teardown() {
    local p ns s
    for p in "${LIVE_PIDS[@]+"${LIVE_PIDS[@]}"}"; do
        stop_pid "$p"
    done
    for ns in "${LIVE_NS[@]+"${LIVE_NS[@]}"}"; do
        ip netns del "$ns" 2>/dev/null
    done
    for s in "${LIVE_SOCKS[@]+"${LIVE_SOCKS[@]}"}"; do
        rm -f "$s"
    done
    LIVE_PIDS=()
    LIVE_NS=()
    LIVE_SOCKS=()
}

on_exit() {
    trap - EXIT INT TERM
    teardown
    rm -rf "$WORK"
}
trap on_exit EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# utime+stime of a process in clock ticks (all its threads, dead ones included).
cpu_ticks() {
    local stat f
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    # after "pid (comm) " comes field 3 (state); utime is field 14, stime field 15.
    read -r -a f <<<"${stat##*) }"
    echo $(( f[11] + f[12] ))
}

hwm_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

# Starts a daemon for implementation $1 with interface $2 in namespace $3 (a child of this
# shell: `ip netns exec` execs the daemon in place); its pid goes to DAEMON_PID.
DAEMON_PID=""
start_daemon() {
    local impl="$1" ifname="$2" ns="$3" log="$WORK/$2.log"
    case "$impl" in
        veil)
            ip netns exec "$ns" "$VEIL" -f "$ifname" >"$log" 2>&1 &
            ;;
        wireguard-go)
            ip netns exec "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
                "$WGGO" -f "$ifname" >"$log" 2>&1 &
            ;;
        boringtun)
            ip netns exec "$ns" env WG_SUDO=true \
                "$BORINGTUN" -f --disable-drop-privileges -l "$WORK/$ifname.btlog" "$ifname" >"$log" 2>&1 &
            ;;
        gotatun)
            # without a terminal, gotatun's privilege drop fails (getlogin); we are root anyway
            ip netns exec "$ns" env WG_SUDO=true \
                "$GOTATUN" -f --disable-drop-privileges -l "$WORK/$ifname.gtlog" "$ifname" >"$log" 2>&1 &
            ;;
    esac
    DAEMON_PID=$!
}

impl_bin() {
    case "$1" in
        veil) echo "$VEIL" ;;
        wireguard-go) echo "$WGGO" ;;
        boringtun) echo "$BORINGTUN" ;;
        gotatun) echo "$GOTATUN" ;;
    esac
}

# Waits (bounded) for a UAPI socket to appear.
wait_sock() {
    local n
    for n in $(seq 1 100); do
        [ -S "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    [ -S "$1" ]
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

# Prints the receiver throughput in Gbit/s of an iperf3 run ($3 parallel streams), or "-".
measure_iperf() {
    local nsc="$1" dst="$2" streams="$3" json="$WORK/iperf.$$.$RANDOM.json"
    timeout $((DURATION + 20)) ip netns exec "$nsc" \
        iperf3 -c "$dst" -t "$DURATION" -P "$streams" -J --connect-timeout 3000 >"$json" 2>/dev/null
    python3 -c '
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    print("%.3f %d" % (d["end"]["sum_received"]["bits_per_second"] / 1e9,
                       d["end"]["sum_received"]["bytes"]))
except Exception:
    print("- 0")
' "$json"
}

RUN=0
# One measurement: implementation $1 ("bare" for the veth alone), round $2. Appends to $RESULTS.
run_one() {
    local impl="$1" round="$2"
    RUN=$((RUN + 1))
    local tag="${$}r${RUN}"
    local nsa="vbench${tag}a" nsb="vbench${tag}b"
    local vea="vbv${tag}a" veb="vbv${tag}b"
    local tuna="vbt${tag}a" tunb="vbt${tag}b"
    local pida="" pidb="" status="ok" dst="10.99.0.2" src_ns="$nsa"
    local t0a=0 t0b=0 t1a=0 t1b=0 hwma="-" hwmb="-"

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

    if [ "$impl" = bare ]; then
        dst="10.98.0.2"
    else
        LIVE_SOCKS+=("/var/run/wireguard/$tuna.sock" "/var/run/wireguard/$tunb.sock")
        start_daemon "$impl" "$tuna" "$nsa"
        pida="$DAEMON_PID"
        LIVE_PIDS+=("$pida")
        start_daemon "$impl" "$tunb" "$nsb"
        pidb="$DAEMON_PID"
        LIVE_PIDS+=("$pidb")
        if ! wait_sock "/var/run/wireguard/$tuna.sock" "$pida" \
            || ! wait_sock "/var/run/wireguard/$tunb.sock" "$pidb"; then
            status="daemon-did-not-start"
        else
            local ka="$WORK/$tuna.key" kb="$WORK/$tunb.key"
            (umask 077 && wg genkey >"$ka" && wg genkey >"$kb")
            if ! ip netns exec "$nsa" wg set "$tuna" private-key "$ka" listen-port 51820 \
                    peer "$(wg pubkey <"$kb")" allowed-ips 10.99.0.2/32 endpoint 10.98.0.2:51820 \
                || ! ip netns exec "$nsb" wg set "$tunb" private-key "$kb" listen-port 51820 \
                    peer "$(wg pubkey <"$ka")" allowed-ips 10.99.0.1/32 endpoint 10.98.0.1:51820; then
                status="wg-set-failed"
            fi
            ip -n "$nsa" addr add 10.99.0.1/24 dev "$tuna"
            ip -n "$nsb" addr add 10.99.0.2/24 dev "$tunb"
            ip -n "$nsa" link set "$tuna" mtu 1420 up
            ip -n "$nsb" link set "$tunb" mtu 1420 up
        fi
    fi

    local srv=""
    if [ "$status" = ok ] && ! wait_ping "$src_ns" "$dst"; then
        status="no-connectivity"
    fi
    local ping_avg="-" ping_max="-" g1="-" g4="-" b1=0 b4=0
    if [ "$status" = ok ]; then
        read -r ping_avg ping_max < <(measure_ping "$src_ns" "$dst")
        ip netns exec "$nsb" iperf3 -s -B "$dst" >"$WORK/iperf-server.log" 2>&1 &
        srv=$!
        LIVE_PIDS+=("$srv")
        # bounded wait for the server to listen
        local n
        for n in $(seq 1 50); do
            ip netns exec "$nsb" ss -ltn 2>/dev/null | grep -q ":5201 " && break
            sleep 0.05
        done
        if [ -n "$pida" ]; then
            t0a="$(cpu_ticks "$pida")"
            t0b="$(cpu_ticks "$pidb")"
        fi
        read -r g1 b1 < <(measure_iperf "$src_ns" "$dst" 1)
        sleep 0.5
        read -r g4 b4 < <(measure_iperf "$src_ns" "$dst" 4)
        if [ -n "$pida" ]; then
            t1a="$(cpu_ticks "$pida")"
            t1b="$(cpu_ticks "$pidb")"
            hwma="$(hwm_kib "$pida")"
            hwmb="$(hwm_kib "$pidb")"
        fi
        if [ "$g1" = - ] || [ "$g4" = - ]; then
            status="iperf3-failed"
        fi
    fi
    if [ -n "$pida" ]; then
        kill -0 "$pida" 2>/dev/null || status="$status,daemon-a-died"
        kill -0 "$pidb" 2>/dev/null || status="$status,daemon-b-died"
    fi
    local cpu="-"
    if [ -n "$pida" ] && [ "$status" = ok ]; then
        cpu="$(python3 -c "print('%.2f' % ((${t1a} - ${t0a} + ${t1b} - ${t0b}) / ${HZ}))")"
    fi
    if [ "$status" != ok ] && [ -n "$pida" ]; then
        {
            echo "--- $impl round $round: $status; daemon logs:"
            tail -n 5 "$WORK/$tuna.log" "$WORK/$tunb.log" 2>/dev/null
        } >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$impl" "$round" "$g1" "$g4" "$ping_avg" "$ping_max" "$cpu" "$((b1 + b4))" \
        "$hwma" "$hwmb" "$status" >>"$RESULTS"
    printf '  round %s %-13s 1 stream %s Gbit/s, 4 streams %s Gbit/s, ping %s/%s ms, cpu %s s, %s\n' \
        "$round" "$impl" "$g1" "$g4" "$ping_avg" "$ping_max" "$cpu" "$status" >&2
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
        printf '%s\t0\t-\t-\t-\t-\t-\t0\t-\t-\tnot-installed\n' "$i" >>"$RESULTS"
    fi
done

{
    echo "machine: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    for i in "${IMPLS[@]}"; do
        echo "$i: $(version_of "$i")"
    done
    echo "iperf3 -t $DURATION (TCP, A -> B, 1 stream then -P 4), ping -c $PINGS -i 0.05, $ROUNDS interleaved rounds"
} >"$WORK/info.txt"
cat "$WORK/info.txt" >&2

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    run_one bare "$round"
    for i in "${AVAILABLE[@]+"${AVAILABLE[@]}"}"; do
        run_one "$i" "$round"
    done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/info.txt"

python3 - "$RESULTS" "$WORK/info.txt" "$ROUNDS" <<'PY'
import sys
from statistics import median

results, info, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [line.rstrip("\n").split("\t") for line in open(results) if line.strip()]
order = []
by = {}
for r in rows:
    if r[0] not in by:
        order.append(r[0])
        by[r[0]] = []
    by[r[0]].append(r)

def num(x):
    try:
        return float(x)
    except ValueError:
        return None

def med(rs, col):
    v = [num(r[col]) for r in rs if r[10] == "ok" and num(r[col]) is not None]
    return median(v) if v else None

def cpu_per_gib(r):
    c, b = num(r[6]), num(r[7])
    return c / (b / 2**30) if c is not None and b else None

summary = {}
for name in order:
    rs = by[name]
    ok = [r for r in rs if r[10] == "ok"]
    s = {
        "g1": med(rs, 2), "g4": med(rs, 3), "pavg": med(rs, 4), "pmax": med(rs, 5),
        "cpu": med(rs, 6),
        "cpug": median([x for x in map(cpu_per_gib, ok) if x is not None]) if any(cpu_per_gib(r) is not None for r in ok) else None,
        "hwm": median([max(num(r[8]), num(r[9])) for r in ok if num(r[8]) is not None and num(r[9]) is not None]) if any(num(r[8]) is not None for r in ok) else None,
        "ok": len(ok), "n": len(rs),
        "fail": sorted({r[10] for r in rs if r[10] != "ok"}),
    }
    summary[name] = s

def f(x, fmt):
    return "—" if x is None else fmt % x

print("### Run information\n")
for line in open(info):
    print("- " + line.rstrip())
print()
print("Median of %d interleaved rounds for every figure (rounds that failed are left out)." % rounds)
print("CPU: user+sys seconds of both daemons together over both iperf3 runs; memory: the larger")
print("VmHWM of the two daemons.\n")
label = {"bare": "bare veth (no tunnel)"}
print("| implementation | TCP 1 stream (Gbit/s) | TCP 4 streams (Gbit/s) | ping avg (ms) | ping max (ms) | CPU (s) | CPU s per GiB | peak RSS (MiB) | rounds ok |")
print("|---|---|---|---|---|---|---|---|---|")
for name in order:
    s = summary[name]
    okc = "%d/%d" % (s["ok"], s["n"])
    if s["fail"]:
        okc += " (" + ", ".join(s["fail"]) + ")"
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        label.get(name, name), f(s["g1"], "%.2f"), f(s["g4"], "%.2f"), f(s["pavg"], "%.3f"),
        f(s["pmax"], "%.3f"), f(s["cpu"], "%.2f"), f(s["cpug"], "%.2f"),
        f(None if s["hwm"] is None else s["hwm"] / 1024, "%.1f"), okc))
print()

v = summary.get("veil")
if v and v["ok"]:
    print("Relative to veil (>1: more throughput, longer round trip, more CPU per GiB, more memory):\n")
    print("| implementation | 1 stream | 4 streams | ping avg | CPU per GiB | peak RSS |")
    print("|---|---|---|---|---|---|")
    def ratio(a, b):
        return "—" if a is None or b in (None, 0) else "%.2f" % (a / b)
    for name in order:
        s = summary[name]
        print("| %s | %s | %s | %s | %s | %s |" % (
            label.get(name, name), ratio(s["g1"], v["g1"]), ratio(s["g4"], v["g4"]),
            ratio(s["pavg"], v["pavg"]), ratio(s["cpug"], v["cpug"]), ratio(s["hwm"], v["hwm"])))
    print()
else:
    print("No ratios: veil was not run or had no successful round.\n")

print("Per round (Gbit/s 1 stream / 4 streams, ping avg / max ms, CPU s, VmHWM KiB of the two daemons):\n")
print("| implementation | " + " | ".join("round %d" % (i + 1) for i in range(rounds)) + " |")
print("|---|" + "---|" * rounds)
for name in order:
    cells = []
    for r in sorted(by[name], key=lambda r: int(r[1])):
        if r[10] == "ok":
            cells.append("%s / %s, %s / %s, %s, %s+%s" % (r[2], r[3], r[4], r[5], r[6], r[8], r[9]))
        else:
            cells.append(r[10])
    cells += [""] * (rounds - len(cells))
    print("| %s | %s |" % (label.get(name, name), " | ".join(cells[:rounds])))
PY
