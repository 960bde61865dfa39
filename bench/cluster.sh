#!/usr/bin/env bash
# The cluster benchmark: podo on one PostgreSQL database with 1, 2 and 3 nodes, writes
# bench/results-cluster.md.
#
#   nice -n 10 bench/cluster.sh
#
# Builds the release binaries, starts a redis-server of its own on a free loopback port (no
# persistence), and runs four set-ups, each on a fresh PostgreSQL database on
# postgres://postgres@127.0.0.1:5432 (trust auth; PODO_BENCH_PG to change) seeded with 2,000
# families: one plain node (no Redis), then cluster mode (PODO_REDIS_URL, PODO_NODE_ID) with 1, 2
# and 3 nodes, so the cost of cluster mode itself shows next to the cost of more nodes. Every node
# gets the same DATABASE_URL, PODO_REDIS_URL and a fixed PODO_JWT_SECRET (the seed mints the
# tokens with it, so a token works on every node). With several nodes podo-load puts family i's
# parent on node i mod n and its child on node (i+1) mod n: every partner delivery and every board
# update on the partner's stream crosses nodes.
#
# Per set-up, each on freshly started nodes: chat at max rate, chat at 10,000 messages/s (open
# loop: latency from the scheduled send time), and board changes at 2,000/s with both members'
# streams open. podo-load samples every node's CPU, the bench's Redis and every `postgres`
# process on the machine (the local PostgreSQL may be shared: its figure is an upper bound).
# Everything is bounded: each podo-load run stops by itself (hard deadline), the whole script
# takes about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${PODO_BENCH_OUT:-bench/results-cluster.md}
PG_ADMIN=${PODO_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
BASE_PORT=${PODO_BENCH_PORT:-18180}
FAMILIES=${PODO_BENCH_FAMILIES:-2000}
# Seconds of load per run.
CHAT_SECS=${PODO_BENCH_CHAT_SECS:-15}
RATE_SECS=${PODO_BENCH_RATE_SECS:-20}
# Set-ups to run (plain1: one node without Redis; cN: cluster mode with N nodes).
SETUPS=${PODO_BENCH_SETUPS:-"plain1 c1 c2 c3"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$CARGO_TARGET_DIR/release"
export PODO_JWT_SECRET=podo-bench-secret
export RUST_LOG=${RUST_LOG:-warn}

for tool in curl jq psql redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "bench/cluster.sh needs $tool" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"

if [[ -z "${PODO_BENCH_NO_BUILD:-}" ]]; then
    cargo build --release -p podo -p podo-load
fi

WORK=$(mktemp -d -t podo-cluster.XXXXXX)
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
NODE_PIDS=()
REDIS_PID=""
DB_NAME=""

# A loopback port nothing listens on.
free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

stop_nodes() {
    local pid
    for pid in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    NODE_PIDS=()
}

drop_db() {
    if [[ -n "$DB_NAME" ]]; then
        psql "$PG_ADMIN" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || true
        DB_NAME=""
    fi
}

cleanup() {
    stop_nodes
    drop_db
    if [[ -n "$REDIS_PID" ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

REDIS_PORT=$(free_port 16400)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
PG_VERSION=$(psql "$PG_ADMIN" -tA -c 'SHOW server_version')

# start_nodes SETUP: plain1 or cN. Sets NODE_PIDS and URL_ARGS.
start_nodes() {
    local setup=$1 count cluster=1 k port
    if [[ $setup == plain1 ]]; then count=1 cluster=0; else count=${setup#c}; fi
    URL_ARGS=()
    local port_from=$BASE_PORT
    for k in $(seq "$count"); do
        port=$(free_port "$port_from")
        port_from=$((port + 1))
        local env=(DATABASE_URL="$DATABASE_URL")
        [[ $cluster == 1 ]] && env+=(PODO_REDIS_URL="$REDIS_URL" PODO_NODE_ID="n$k")
        env "${env[@]}" "$BIN/podo" serve --bind "127.0.0.1:$port" --data-dir "$WORK/data-$k" \
            --static-dir static >>"$WORK/node-$k.log" 2>&1 &
        NODE_PIDS+=($!)
        URL_ARGS+=(--url "http://127.0.0.1:$port")
    done
    local i
    for i in $(seq "$count"); do
        local url=${URL_ARGS[$((2 * i - 1))]}
        for _ in $(seq 150); do
            curl -fs "$url/healthz" >/dev/null 2>&1 && continue 2
            sleep 0.1
        done
        echo "node $i did not start; its log:" >&2
        tail -20 "$WORK/node-$i.log" >&2
        exit 1
    done
}

COMMANDS=()
# load SETUP NAME SUBCOMMAND ARGS...: runs podo-load against freshly started nodes.
load() {
    local setup=$1 name=$2
    shift 2
    start_nodes "$setup"
    local pids=() pid
    for pid in "${NODE_PIDS[@]}"; do pids+=(--server-pid "$pid"); done
    local watch=(--postgres-cpu)
    [[ $setup != plain1 ]] && watch+=(--redis-pid "$REDIS_PID")
    local cmd=("$BIN/podo-load" "$@" "${URL_ARGS[@]}" --tokens "$WORK/tokens.json" "${pids[@]}"
        "${watch[@]}" --json)
    local shown="podo-load $* $(printf '%s ' "${URL_ARGS[@]}" | sed 's/127.0.0.1:[0-9]*/127.0.0.1:PORT/g')--tokens tokens.json"
    shown+="$(printf ' --server-pid $PID%.0s' "${NODE_PIDS[@]}")"
    [[ $setup != plain1 ]] && shown+=' --redis-pid $REDIS_PID'
    COMMANDS+=("# $setup: $shown --postgres-cpu --json")
    echo "== $setup $name: podo-load $*" >&2
    "${cmd[@]}" >"$RESULTS/$setup-$name.json" 2>>"$WORK/load.log" ||
        echo "   ($setup $name exited with $?)" >&2
    jq -c '{figures: (.figures | with_entries(select(.key |
            test("^(server CPU|redis CPU|postgres CPU \\(|server committed|acknowledged)")))),
            latency: (.latency | map_values({p50_ms, p99_ms})), violations}' \
        "$RESULTS/$setup-$name.json" >&2 || true
    stop_nodes
}

for setup in $SETUPS; do
    DB_NAME="podo_cluster_$(date +%s)_$setup"
    psql "$PG_ADMIN" -q -c "CREATE DATABASE $DB_NAME"
    DATABASE_URL="${PG_ADMIN%/*}/$DB_NAME"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    echo "== $setup: seed $FAMILIES families with boards" >&2
    "$BIN/podo-load" seed --database-url "$DATABASE_URL" --families "$FAMILIES" --boards \
        --out "$WORK/tokens.json" >/dev/null
    load "$setup" chat_max chat --rate 0 --window 8 --duration "$CHAT_SECS"
    load "$setup" chat_10k chat --rate 10000 --open-loop --duration "$RATE_SECS"
    load "$setup" board_2k board --rate 2000 --open-loop --duration "$RATE_SECS"
    drop_db
done

# ---- results-cluster.md ----
fig() { jq -r "$2 // empty" "$RESULTS/$1.json" 2>/dev/null || true; }
round() { [[ -z "$1" ]] && echo "n/a" || printf '%.*f' "${2:-1}" "$1"; }
label() { case $1 in plain1) echo "1 node, plain" ;; c1) echo "1 node, cluster mode" ;; c*) echo "${1#c} nodes" ;; esac; }
# row TITLE JQ [DIGITS]: one value per set-up.
row() {
    local title=$1 query=$2 digits=${3:-1} line setup
    line="| $title |"
    for setup in $SETUPS; do line+=" $(round "$(fig "$setup-${query%%:*}" "${query#*:}")" "$digits") |"; done
    echo "$line"
}
# pair TITLE JQ1 JQ2 [DIGITS]: "a / b" per set-up.
pair() {
    local title=$1 q1=$2 q2=$3 digits=${4:-1} line setup
    line="| $title |"
    for setup in $SETUPS; do
        line+=" $(round "$(fig "$setup-${q1%%:*}" "${q1#*:}")" "$digits") / $(round "$(fig "$setup-${q2%%:*}" "${q2#*:}")" "$digits") |"
    done
    echo "$line"
}

# ratio TITLE JQ: each set-up's value divided by the first set-up's (the cost against 1 node).
ratio() {
    local title=$1 query=$2 line setup base value first=${SETUPS%% *}
    base=$(fig "$first-${query%%:*}" "${query#*:}")
    line="| $title |"
    for setup in $SETUPS; do
        value=$(fig "$setup-${query%%:*}" "${query#*:}")
        if [[ -n "$base" && -n "$value" ]]; then
            line+=" $(awk -v v="$value" -v b="$base" 'BEGIN { printf "%.2f×", v / b }') |"
        else
            line+=" n/a |"
        fi
    done
    echo "$line"
}

{
    echo "# podo cluster benchmark (PostgreSQL $PG_VERSION, Redis $REDIS_VERSION)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), load average at the end $(cut -d' ' -f1-3 /proc/loadavg)." \
        "Written by \`bench/cluster.sh\`; every node, podo-load, Redis and PostgreSQL share the machine," \
        "so throughput is bounded by its cores and the CPU per operation is the figure to compare."
    echo
    header="| figure |" sep="|---|"
    for setup in $SETUPS; do header+=" $(label "$setup") |"; sep+="---|"; done
    echo "$header"
    echo "$sep"
    row "chat at max rate: committed messages/s" 'chat_max:.figures["server committed messages/s"]' 0
    row "  server CPU per message (µs, all nodes)" 'chat_max:.figures["server CPU per message"]'
    row "  Redis cores" 'chat_max:.figures["redis CPU"]' 2
    row "  PostgreSQL cores" 'chat_max:.figures["postgres CPU (all postgres processes)"]' 2
    pair "chat at 10,000/s: send → ack p50 / p99 ms" 'chat_10k:.latency["send → ack"].p50_ms' 'chat_10k:.latency["send → ack"].p99_ms'
    pair "  send → partner p50 / p99 ms" 'chat_10k:.latency["send → partner message"].p50_ms' 'chat_10k:.latency["send → partner message"].p99_ms'
    row "  acknowledged messages/s" 'chat_10k:.figures["acknowledged messages/s"]' 0
    row "  server CPU (cores, all nodes)" 'chat_10k:.figures["server CPU"]' 2
    row "  server CPU per message (µs)" 'chat_10k:.figures["server CPU per message"]'
    row "  Redis cores" 'chat_10k:.figures["redis CPU"]' 2
    row "  Redis CPU per message (µs)" 'chat_10k:.figures["redis CPU per message"]'
    row "  PostgreSQL cores" 'chat_10k:.figures["postgres CPU (all postgres processes)"]' 2
    row "  PostgreSQL CPU per message (µs)" 'chat_10k:.figures["postgres CPU per message"]'
    row "  violations (lost, duplicated, reordered, missing)" 'chat_10k:.violations' 0
    pair "board at 2,000/s, streams open: change → last stream p50 / p99 ms" 'board_2k:.latency["change → last SSE of family"].p50_ms' 'board_2k:.latency["change → last SSE of family"].p99_ms'
    pair "  change → ack p50 / p99 ms" 'board_2k:.latency["change → ack"].p50_ms' 'board_2k:.latency["change → ack"].p99_ms'
    row "  acknowledged changes/s" 'board_2k:.figures["acknowledged changes/s"]' 0
    row "  server CPU (cores, all nodes)" 'board_2k:.figures["server CPU"]' 2
    row "  server CPU per change (µs)" 'board_2k:.figures["server CPU per change"]'
    row "  Redis cores" 'board_2k:.figures["redis CPU"]' 2
    row "  PostgreSQL cores" 'board_2k:.figures["postgres CPU (all postgres processes)"]' 2
    row "  PostgreSQL CPU per change (µs)" 'board_2k:.figures["postgres CPU per change"]'
    row "  violations (undelivered, regressions, unexpected versions)" 'board_2k:.violations' 0
    ratio "**cost against $(label "${SETUPS%% *}")**: server CPU per message at 10,000/s" 'chat_10k:.figures["server CPU per message"]'
    ratio "  server CPU per board change at 2,000/s" 'board_2k:.figures["server CPU per change"]'
    echo
    echo "Each set-up on a fresh database seeded with \`podo-load seed --database-url <fresh db> --families $FAMILIES --boards --out tokens.json\`;"
    echo "nodes: \`DATABASE_URL=<db> [PODO_REDIS_URL=redis://127.0.0.1:PORT/0 PODO_NODE_ID=nK] PODO_JWT_SECRET=podo-bench-secret podo serve --bind 127.0.0.1:PORT\`,"
    echo "started afresh for every run; Redis: \`redis-server --port PORT --bind 127.0.0.1 --save '' --appendonly no\`."
    echo "PostgreSQL cores are those of every \`postgres\` process on the machine during the run."
    echo
    echo '```sh'
    printf '%s\n' "${COMMANDS[@]}"
    echo '```'
    echo
    echo "Full JSON of each run:"
    echo
    for f in "$RESULTS"/*.json; do
        echo "<details><summary>$(basename "$f" .json)</summary>"
        echo
        echo '```json'
        jq . "$f" 2>/dev/null || cat "$f"
        echo '```'
        echo "</details>"
    done
} >"$OUT"
echo "wrote $OUT" >&2
