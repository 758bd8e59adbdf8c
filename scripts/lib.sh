# Shell functions shared by scripts/bench.sh and scripts/flood.sh (sourced, not run).
#
# The caller sets WORK (a scratch directory, removed at exit) and keeps what it starts in the
# arrays LIVE_PIDS (processes), LIVE_NS (network namespaces) and LIVE_SOCKS (UAPI sockets);
# sourcing this file installs the traps that remove them all on exit or interrupt.

LIVE_PIDS=()
LIVE_NS=()
LIVE_SOCKS=()

# Stops process $1: SIGTERM, then SIGKILL after 3 s.
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

# Stops every live process, removes every live namespace and socket.
teardown() {
    local p ns s
    for p in "${LIVE_PIDS[@]+"${LIVE_PIDS[@]}"}"; do stop_pid "$p"; done
    for ns in "${LIVE_NS[@]+"${LIVE_NS[@]}"}"; do ip netns del "$ns" 2>/dev/null; done
    for s in "${LIVE_SOCKS[@]+"${LIVE_SOCKS[@]}"}"; do rm -f "$s"; done
    LIVE_PIDS=()
    LIVE_NS=()
    LIVE_SOCKS=()
}

on_exit() {
    trap - EXIT INT TERM
    teardown
    if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}
trap on_exit EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# Microseconds since the epoch (bash's clock, no fork).
now_us() {
    local t="${EPOCHREALTIME/[.,]/}"
    echo "$((10#$t))"
}

# --variant LABEL=VAR=VALUE[,VAR=VALUE...]: registers "veil[LABEL]" with its environment in the
# associative array VARIANT_ENV (declared by the caller) and sets VARIANT_NAME to it; exits on a
# bad label.
variant_register() {
    local label="${1%%=*}"
    case "$label" in
        '' | *[!A-Za-z0-9_-]*)
            echo "--variant wants LABEL=VAR=VALUE, LABEL of letters, digits, - or _" >&2
            exit 2
            ;;
    esac
    VARIANT_ENV["veil[$label]"]="${1#*=}"
    VARIANT_NAME="veil[$label]"
}

# Splits variant $1's environment: the binary (VEIL_BIN=PATH, else $2) into VARIANT_BIN and
# the other VAR=VALUE words into the array VARIANT_VARS.
variant_split() {
    local vars=() v
    VARIANT_BIN="$2"
    VARIANT_VARS=()
    IFS=',' read -r -a vars <<<"${VARIANT_ENV[$1]}"
    for v in "${vars[@]}"; do
        case "$v" in
            VEIL_BIN=*) VARIANT_BIN="${v#VEIL_BIN=}" ;;
            *) VARIANT_VARS+=("$v") ;;
        esac
    done
}
