#!/usr/bin/env bash
# Before/after figures of two builds of podo on this machine, in alternating runs:
#
#   bench/compare.sh OLD_PODO NEW_PODO [PAIRS]
#
# OLD_PODO and NEW_PODO are two `podo` release binaries (e.g. one built from an earlier commit in
# a worktree). Seeds 2,000 families once into a SQLite file; each run starts the binary on a fresh
# copy of it and drives it with this checkout's podo-load: board changes at max rate (1,000
# families, no streams, 15 s), then chat at max rate (2,000 families, 15 s). The runs alternate
# old, new, old, new, ... so that a change in the machine's load colours both alike. Prints one
# line per run and the new/old ratio per pair.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 PAIRS=${3:-3}
PORT=${PODO_BENCH_PORT:-18090}
export PODO_JWT_SECRET=podo-bench-secret RUST_LOG=warn
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p podo-load
LOAD=target/release/podo-load
WORK=$(mktemp -d -t podo-compare.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$NEW" serve --bind "127.0.0.1:$PORT" --database-url "sqlite://$WORK/seed.db" --data-dir "$WORK" >/dev/null 2>&1 &
pid=$!
until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.1; done
kill -TERM $pid; wait $pid || true
"$LOAD" seed --database-url "sqlite://$WORK/seed.db" --families 2000 --boards --out "$WORK/tokens.json" >/dev/null

run() { # BIN SCENARIO ARGS... -> prints the figure
    local bin=$1 figure=$2; shift 2
    rm -f "$WORK"/run.db*
    # The seed's last writes may still be in its WAL.
    for suffix in "" -wal -shm; do
        [[ -e "$WORK/seed.db$suffix" ]] && cp "$WORK/seed.db$suffix" "$WORK/run.db$suffix"
    done
    "$bin" serve --bind "127.0.0.1:$PORT" --database-url "sqlite://$WORK/run.db" --data-dir "$WORK" >/dev/null 2>&1 &
    local pid=$!
    until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.1; done
    "$LOAD" "$@" --server "http://127.0.0.1:$PORT" --tokens "$WORK/tokens.json" --server-pid $pid --json \
        >"$WORK/out.json" 2>"$WORK/load.err" || tail -3 "$WORK/load.err" >&2
    kill -TERM $pid; wait $pid || true
    jq -r --arg f "$figure" '.figures[$f] // empty' "$WORK/out.json"
}

for scenario in board chat; do
    case $scenario in
        board) figure="acknowledged changes/s"; args=(board --families 1000 --rate 0 --duration 15 --streams-per-member 0) ;;
        chat) figure="server committed messages/s"; args=(chat --families 2000 --rate 0 --window 8 --duration 15) ;;
    esac
    echo "== $scenario: ${args[*]} ($figure)"
    for pair in $(seq "$PAIRS"); do
        old=$(run "$OLD" "$figure" "${args[@]}")
        new=$(run "$NEW" "$figure" "${args[@]}")
        ratio=$(awk -v a="$old" -v b="$new" 'BEGIN { if (a > 0) printf "%.3f", b / a; else print "n/a" }')
        printf 'pair %d: old %.0f  new %.0f  new/old %s\n' "$pair" "$old" "$new" "$ratio"
    done
done
