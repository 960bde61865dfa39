#!/usr/bin/env bash
# The cost of cluster mode in alternating runs: 1 node and 2 nodes in cluster mode, in the order
# 1, 2, 1, 2, ..., each run on a fresh PostgreSQL database (2,000 families) and fresh nodes,
# printing the server CPU per operation (all nodes) and the 2-node / 1-node ratio per pair.
#
#   bench/cluster-pairs.sh [PAIRS]        # default 3 pairs; chat at 10,000/s, then board at 2,000/s
#
# Uses the release binaries as built (run bench/cluster.sh or cargo build --release first), a
# redis-server of its own on a free port, and PODO_BENCH_PG (default
# postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-3}
PG_ADMIN=${PODO_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
SECS=${PODO_BENCH_SECS:-15}
BIN=${CARGO_TARGET_DIR:-target}/release
export PODO_JWT_SECRET=podo-bench-secret RUST_LOG=warn
ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d -t podo-pairs.XXXXXX)
PIDS=() REDIS_PID="" DB=""
stop_nodes() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    if [[ -n "$DB" ]]; then psql "$PG_ADMIN" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true; DB=""; fi
}
trap 'stop_nodes; [[ -n "$REDIS_PID" ]] && kill "$REDIS_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}
REDIS_PORT=$(free_port 16450)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# run NODES SCENARIO ARGS...: prints the server CPU per operation.
run() {
    local nodes=$1 k port from=18250
    shift
    DB="podo_pairs_$(date +%s%N | cut -c1-13)"
    psql "$PG_ADMIN" -q -c "CREATE DATABASE $DB"
    local url="${PG_ADMIN%/*}/$DB"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    "$BIN/podo-load" seed --database-url "$url" --families 2000 --boards --out "$WORK/tokens.json" &>/dev/null
    local args=()
    for k in $(seq "$nodes"); do
        port=$(free_port "$from")
        from=$((port + 1))
        DATABASE_URL="$url" PODO_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" PODO_NODE_ID="n$k" \
            "$BIN/podo" serve --bind "127.0.0.1:$port" --data-dir "$WORK/d$k" >>"$WORK/node.log" 2>&1 &
        PIDS+=($!)
        args+=(--url "http://127.0.0.1:$port" --server-pid $!)
        until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do sleep 0.1; done
    done
    "$BIN/podo-load" "$@" --duration "$SECS" "${args[@]}" --tokens "$WORK/tokens.json" --json \
        >"$WORK/out.json" 2>>"$WORK/load.log" || echo "  (podo-load exited with $?)" >&2
    stop_nodes
    jq -r '[(.figures["server CPU per message"] // .figures["server CPU per change"]),
            ([.checks[]] | add)] | "\(.[0]) \(.[1])"' "$WORK/out.json"
}

for scenario in "chat --rate 10000 --open-loop" "board --rate 2000 --open-loop"; do
    echo "== $scenario: server CPU per operation (µs, all nodes), 1 node → 2 nodes"
    for pair in $(seq "$PAIRS"); do
        # shellcheck disable=SC2086 # the scenario's words are its arguments
        read -r one bad1 < <(run 1 $scenario)
        # shellcheck disable=SC2086
        read -r two bad2 < <(run 2 $scenario)
        echo "pair $pair: $one → $two  ratio $(awk -v a="$one" -v b="$two" 'BEGIN { printf "%.2f", b / a }')  violations $bad1 / $bad2"
    done
done
