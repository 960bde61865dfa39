#!/usr/bin/env bash
# Server CPU per chat message, podo against a bare reference server (issue #21 item 2: podo
# within 1.2x of bench/bare's podo-bare at 10,000 msgs/s, open loop, 1,000 paired families).
#
#   bench/bare.sh [PAIRS]      # PAIRS alternating runs (podo, bare, podo, bare, ...); default 3
#
# Builds podo and podo-load (`cargo build --release -p podo -p podo-load`, skipped with
# PODO_BENCH_NO_BUILD=1; binaries from $CARGO_TARGET_DIR/release, default target/) and podo-bare
# (into bench/bare/target). Seeds 2,000 families into a SQLite file once; every run starts its
# server on a fresh copy of it and runs
#   podo-load chat --families 1000 --rate $RATE --duration 20 --open-loop --server-pid PID --json
# Prints per run the committed msgs/s, ack p50/p99, partner p99, server CPU and CPU µs per
# message, and per pair podo/bare CPU per message. A run fails if podo-load's checks fail
# (loss, duplicates, order), a message stayed unacknowledged, or the stored rows are not seqs
# 1..n per family, once each. Environment: RATE (10000), FAMILIES (1000), DURATION (20),
# PODO_BENCH_PORT (18097).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
PAIRS=${1:-3}
RATE=${RATE:-10000}
FAMILIES=${FAMILIES:-1000}
DURATION=${DURATION:-20}
PORT=${PODO_BENCH_PORT:-18097}
SERVER="http://127.0.0.1:$PORT"
export PODO_JWT_SECRET=podo-bench-secret RUST_LOG=${RUST_LOG:-warn}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$CARGO_TARGET_DIR/release"
BARE=bench/bare/target/release/podo-bare
# 2,000 sockets in the server and as many in podo-load.
ulimit -n "$(ulimit -Hn)"

for tool in curl jq sqlite3; do
    command -v "$tool" >/dev/null || { echo "bench/bare.sh needs $tool" >&2; exit 1; }
done

if [[ ${PODO_BENCH_NO_BUILD:-0} != 1 ]]; then
    cargo build --release -q -p podo -p podo-load
fi
# Its own crate and target directory (not the root workspace's).
cargo build --release -q --locked --manifest-path bench/bare/Cargo.toml --target-dir bench/bare/target
LOAD="$BIN/podo-load"
for bin in "$BIN/podo" "$LOAD" "$BARE"; do
    [[ -x $bin ]] || { echo "missing $bin" >&2; exit 1; }
done

WORK=$(mktemp -d -t podo-bare.XXXXXX)
SERVER_PID=""
trap 'stop_server; rm -rf "$WORK"' EXIT



# start_server podo|bare: a fresh server on a fresh copy of the seeded database.
start_server() {
    fresh_db
    echo "== $1" >>"$WORK/server.log"
    case $1 in
        podo) "$BIN/podo" serve --bind "127.0.0.1:$PORT" --database-url "sqlite://$WORK/run.db" \
            --data-dir "$WORK" --static-dir static >>"$WORK/server.log" 2>&1 & ;;
        bare) "$BARE" --bind "127.0.0.1:$PORT" --database-url "sqlite://$WORK/run.db" \
            >>"$WORK/server.log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    wait_healthy
}

echo "seeding 2,000 families" >&2
"$LOAD" seed --database-url "sqlite://$WORK/seed.db" --families 2000 --out "$WORK/tokens.json" >/dev/null

fig() { jq -r --arg f "$2" '.figures[$f] // empty' "$WORK/$1.json" 2>/dev/null || true; }
lat() { jq -r --arg l "$2" --arg q "$3" '.latency[$l][$q] // empty' "$WORK/$1.json" 2>/dev/null || true; }
num() { [[ -z "$1" ]] && echo "n/a" || printf "%.${2:-1}f" "$1"; }

# The stored rows: every family's seqs are 1..n, each (family, seq) and client id once.
db_check() {
    sqlite3 "$WORK/run.db" "SELECT
        (SELECT COUNT(*) FROM (SELECT family_id FROM messages GROUP BY family_id
            HAVING MAX(seq) != COUNT(*) OR MIN(seq) != 1 OR COUNT(DISTINCT seq) != COUNT(*)))
      + (SELECT COUNT(*) - COUNT(DISTINCT family_id || '/' || sender_id || '/' || client_id) FROM messages)"
}

FAILED=0
# measure podo|bare NAME: one run, its JSON in $WORK/NAME.json; prints its line.
measure() {
    local kind=$1 name=$2 status=0
    start_server "$kind"
    "$LOAD" chat --families "$FAMILIES" --rate "$RATE" --duration "$DURATION" --open-loop \
        --server "$SERVER" --tokens "$WORK/tokens.json" --server-pid "$SERVER_PID" --json \
        >"$WORK/$name.json" 2>"$WORK/$name.err" || status=$?
    stop_server
    local violations unacked bad
    violations=$(jq -r '.violations // "?"' "$WORK/$name.json" 2>/dev/null || echo "?")
    unacked=$(fig "$name" "unacknowledged at end")
    bad=$(db_check 2>&1 || echo "?")
    printf '%-5s %-8s committed %8s msg/s  ack p50 %6s p99 %7s ms  partner p99 %7s ms  CPU %5s cores  %6s µs/msg  checks: violations %s, unacked %s, bad rows %s\n' \
        "$kind" "$name" "$(num "$(fig "$name" "server committed messages/s")" 0)" \
        "$(num "$(lat "$name" "send → ack" p50_ms)" 2)" "$(num "$(lat "$name" "send → ack" p99_ms)" 2)" \
        "$(num "$(lat "$name" "send → partner message" p99_ms)" 2)" \
        "$(num "$(fig "$name" "server CPU")" 2)" "$(num "$(fig "$name" "server CPU per message")" 1)" \
        "$violations" "$(num "$unacked" 0)" "$bad"
    if [[ $status != 0 || $violations != 0 || $bad != 0 || $(num "$unacked" 0) != 0 ]]; then
        FAILED=1
        echo "      FAILED (podo-load exit $status); its stderr:" >&2
        tail -5 "$WORK/$name.err" >&2
    fi
}

echo "chat --families $FAMILIES --rate $RATE --duration $DURATION --open-loop, $PAIRS pairs, $(nproc) cores"
RATIOS=()
for pair in $(seq "$PAIRS"); do
    measure podo "podo_$pair"
    measure bare "bare_$pair"
    p=$(fig "podo_$pair" "server CPU per message")
    b=$(fig "bare_$pair" "server CPU per message")
    ratio=$(awk -v p="$p" -v b="$b" 'BEGIN { if (b > 0) printf "%.3f", p / b; else print "n/a" }')
    RATIOS+=("$ratio")
    echo "pair $pair: podo/bare CPU per message $ratio"
done
echo "podo/bare CPU per message by pair: ${RATIOS[*]} (goal ≤ 1.2)"
if [[ $FAILED != 0 ]]; then
    echo "some run failed its checks (server log: kept in $WORK.log)" >&2
    cp "$WORK/server.log" "$WORK.log"
    exit 3
fi
