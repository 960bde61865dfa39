#!/usr/bin/env bash
# Server memory per idle connection (issue #21): chat WebSockets alone, and one SSE stream plus
# one socket per member (`--mixed`), 2,000 and 10,000 connections, each on a fresh server.
#
#   bench/ws-idle.sh                     # release build, writes bench/results-ws-idle.md
#   bench/ws-idle.sh --compare OLD NEW [PAIRS]
#                                        # two podo binaries in alternating runs (old, new, old,
#                                        # new, ...), prints KiB per connection and new/old
#   bench/ws-idle.sh --heap [N]          # N idle sockets (default 2,000) on a server run under
#                                        # heaptrack, killed while they are open: prints the heap
#                                        # still allocated per socket, by allocation site
#                                        # (bench/heap-sites.py); installs heaptrack if missing
#
# Seeds 5,000 families with boards into a SQLite file once; every run starts the server on a
# fresh copy of it. results-ws-idle.md is written up to the line that starts with
# "<!-- by hand" and keeps everything after it (the heap breakdown).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
PORT=${PODO_BENCH_PORT:-18095}
SERVER="http://127.0.0.1:$PORT"
OUT=bench/results-ws-idle.md
export PODO_JWT_SECRET=podo-bench-secret RUST_LOG=${RUST_LOG:-warn}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$CARGO_TARGET_DIR/release"
# 10,000 connections are 10,000 descriptors in the server and as many in podo-load.
ulimit -n "$(ulimit -Hn)"

MODE=results
case "${1:-}" in
    --compare) MODE=compare OLD=$2 NEW=$3 PAIRS=${4:-2} ;;
    --heap) MODE=heap HEAP_SOCKETS=${2:-2000} ;;
    "") ;;
    *) echo "usage: bench/ws-idle.sh [--compare OLD NEW [PAIRS] | --heap [N]]" >&2; exit 2 ;;
esac

nice -n 10 cargo build --release -q -p podo -p podo-load
LOAD="$BIN/podo-load"
WORK=$(mktemp -d -t podo-ws-idle.XXXXXX)
SERVER_PID=""
trap 'stop_server; rm -rf "$WORK"' EXIT



# start_server BIN [WRAPPER...]: a fresh server on a fresh copy of the seeded database.
start_server() {
    local bin=$1
    shift
    fresh_db
    "$@" "$bin" serve --bind "127.0.0.1:$PORT" --database-url "sqlite://$WORK/run.db" \
        --data-dir "$WORK" --static-dir static >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    wait_healthy
}

# The database: migrated by a first start, then 5,000 families with boards.
start_server "$BIN/podo"
stop_server
cp "$WORK/run.db" "$WORK/seed.db"
"$LOAD" seed --database-url "sqlite://$WORK/seed.db" --families 5000 --boards \
    --out "$WORK/tokens.json" >/dev/null

# The runs: name, families, flags. 2,000 sockets are 1,000 families (two members, one socket
# each); mixed, 2,000 connections are 500 families (a socket and a stream per member).
RUNS=("ws_2k 1000" "ws_10k 5000" "mixed_2k 500 --mixed" "mixed_10k 2500 --mixed")

# measure BIN NAME FAMILIES FLAGS...: one run, its JSON in $WORK/NAME.json.
COMMANDS=()
measure() {
    local bin=$1 name=$2 families=$3
    shift 3
    start_server "$bin"
    local args=(ws-idle --families "$families" "$@" --hold 10)
    COMMANDS+=("podo-load ${args[*]} --server $SERVER --tokens tokens.json --server-pid \$PID --json")
    nice -n 10 "$LOAD" "${args[@]}" --server "$SERVER" --tokens "$WORK/tokens.json" \
        --server-pid "$SERVER_PID" --json >"$WORK/$name.json" 2>"$WORK/load.err" ||
        { echo "   ($name exited with $?)" >&2; tail -3 "$WORK/load.err" >&2; }
    stop_server
}
fig() { jq -r --arg f "$2" '.figures[$f] // empty' "$WORK/$1.json" 2>/dev/null || true; }
checks() { jq -r '.violations // "?"' "$WORK/$1.json" 2>/dev/null || echo "?"; }

if [[ $MODE == compare ]]; then
    for run in "${RUNS[@]}"; do
        read -r name families flags <<<"$run"
        echo "== $name: ws-idle --families $families $flags (KiB per idle connection)"
        for pair in $(seq "$PAIRS"); do
            # shellcheck disable=SC2086
            measure "$OLD" "${name}_old" "$families" $flags
            # shellcheck disable=SC2086
            measure "$NEW" "${name}_new" "$families" $flags
            old=$(fig "${name}_old" "server RSS per idle connection")
            new=$(fig "${name}_new" "server RSS per idle connection")
            ratio=$(awk -v a="$old" -v b="$new" 'BEGIN { if (a > 0) printf "%.3f", b / a; else print "n/a" }')
            printf 'pair %d: old %.2f  new %.2f  new/old %s  (violations old %s new %s)\n' \
                "$pair" "$old" "$new" "$ratio" "$(checks "${name}_old")" "$(checks "${name}_new")"
        done
    done
    exit 0
fi

if [[ $MODE == heap ]]; then
    if ! command -v heaptrack >/dev/null; then
        echo "--heap needs heaptrack: installing Debian's package" >&2
        { apt-get install -y -q heaptrack >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q heaptrack >/dev/null; }; } ||
            { echo "could not install heaptrack (apt-get install heaptrack)" >&2; exit 1; }
    fi
    families=$((HEAP_SOCKETS / 2))
    start_server "$BIN/podo" heaptrack -o "$WORK/heap"
    # heaptrack's own start-up is slow; the pid is heaptrack's shell, the server is its child.
    server=$(pgrep -P "$SERVER_PID" -x podo || pgrep -n -x podo)
    "$LOAD" ws-idle --families "$families" --hold 5 --server "$SERVER" --tokens "$WORK/tokens.json" \
        --server-pid "$server" --json >"$WORK/heap.json" &
    load=$!
    # Kill the server while every socket is open (after podo-load's settle, during its hold):
    # what is still allocated then is what the idle sockets hold.
    for _ in $(seq 240); do
        [[ $(curl -fs "$SERVER/metrics" | awk '$1 == "podo_ws_sessions" { print $2 }') == "$HEAP_SOCKETS" ]] && break
        sleep 0.5
    done
    sleep 4
    kill -KILL "$server"
    wait "$load" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    # heaptrack names its file heap.zst or heap.gz, after the compressor it found. (Listing both
    # patterns with ls failed on the missing one, and pipefail ended the script there.)
    file=""
    for candidate in "$WORK"/heap*.zst "$WORK"/heap*.gz; do
        if [[ -s $candidate ]]; then file=$candidate; break; fi
    done
    [[ -n $file ]] || { echo "heaptrack wrote no profile; its log:" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    cp "$file" "/tmp/podo-ws-idle-heap.${file##*.}"
    heaptrack_print -f "$file" --print-leaks 1 --print-peaks 0 --print-allocators 0 \
        --print-temporary 0 -n 300 -s 30 >"$WORK/heap.txt" || true
    cp "$WORK/heap.txt" /tmp/podo-ws-idle-heap.txt
    python3 bench/heap-sites.py "$WORK/heap.txt" "$HEAP_SOCKETS" 16 >/tmp/podo-ws-idle-heap-sites.txt
    echo "heaptrack_print output: /tmp/podo-ws-idle-heap.txt (allocations live at the kill);" \
        "per socket by site: /tmp/podo-ws-idle-heap-sites.txt, its top:"
    head -30 /tmp/podo-ws-idle-heap-sites.txt | cut -c1-220
    exit 0
fi

for run in "${RUNS[@]}"; do
    read -r name families flags <<<"$run"
    echo "== $name: ws-idle --families $families $flags" >&2
    # shellcheck disable=SC2086
    measure "$BIN/podo" "$name" "$families" $flags
    jq -c '{figures, violations}' "$WORK/$name.json" >&2 || true
done

round() { [[ -z "$1" ]] && echo "n/a" || printf '%.1f' "$1"; }
met() { [[ -z "$1" ]] && echo "n/a" || awk -v v="$1" 'BEGIN { print (v <= 8 ? "yes" : "no") }'; }
tail_part=""
[[ -f $OUT ]] && tail_part=$(sed -n '/^<!-- by hand/,$p' "$OUT")
{
    echo "# Idle connections: server memory per connection (SQLite)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')." \
        "Written by \`bench/ws-idle.sh\`; each run on a fresh server, RSS from /proc/PID/status before" \
        "the connections and 3 s after the last one had its first frame (and after a 10 s hold)."
    echo
    echo "| connections | kind | RSS before → with (MiB) | KiB per connection | after 10 s hold | goal ≤ 8 KiB | checks failed |"
    echo "|---|---|---|---|---|---|---|"
    for run in "${RUNS[@]}"; do
        read -r name families flags <<<"$run"
        n=$(( $(fig "$name" "websockets open" | cut -d. -f1) + $(fig "$name" "sse streams open" | cut -d. -f1) ))
        kind="WebSocket"
        [[ -n $flags ]] && kind="SSE + WebSocket"
        per=$(fig "$name" "server RSS per idle connection")
        printf '| %s | %s | %s → %s | %s | %s | %s | %s |\n' "$n" "$kind" \
            "$(round "$(fig "$name" "server RSS before")")" "$(round "$(fig "$name" "server RSS with connections")")" \
            "$(round "$per")" "$(round "$(fig "$name" "server RSS per idle connection after the hold")")" \
            "$(met "$per")" "$(checks "$name")"
    done
    echo
    echo "Commands (after \`podo-load seed --families 5000 --boards\`, one fresh \`podo serve\` each):"
    echo
    echo '```sh'
    printf '%s\n' "${COMMANDS[@]}"
    echo '```'
    echo
    if [[ -n $tail_part ]]; then
        printf '%s\n' "$tail_part"
    else
        echo "<!-- by hand: everything below is kept by bench/ws-idle.sh -->"
    fi
} >"$OUT"
echo "wrote $OUT" >&2
