#!/usr/bin/env bash
# Benchmarks podo on this machine with podo-load and writes bench/results.md (SQLite) or
# bench/results-postgres.md (--postgres).
#
#   bench/run.sh              # SQLite (a fresh database in a temp dir)
#   bench/run.sh --postgres   # a fresh PostgreSQL database on postgres://postgres@127.0.0.1:5432,
#                             # dropped at the end
#
# Builds the release binaries, seeds families straight into the database, and for each scenario
# starts a fresh `podo serve` (so one scenario's memory and loaded actors do not colour the next),
# runs podo-load against it with the server's pid (RSS and CPU come from /proc), and stops it.
# Chat scenarios run only when the server answers on /api/chat/ws. Everything is bounded: each
# podo-load run stops by itself, and the whole script takes well under 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

POSTGRES=0
[[ "${1:-}" == "--postgres" ]] && POSTGRES=1
OUT=bench/results.md
[[ $POSTGRES == 1 ]] && OUT=bench/results-postgres.md
PG_ADMIN=${PODO_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${PODO_BENCH_PORT:-18080}
SERVER="http://127.0.0.1:$PORT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$CARGO_TARGET_DIR/release"
# A fixed key so the seed can mint tokens the server accepts.
export PODO_JWT_SECRET=podo-bench-secret
export RUST_LOG=${RUST_LOG:-warn}

for tool in curl jq; do
    command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool" >&2; exit 1; }
done

# The server and podo-load each hold one side of every connection; 16,000 need more than the
# default soft limit.
ulimit -n "$(ulimit -Hn)"

cargo build --release -p podo -p podo-load

WORK=$(mktemp -d -t podo-bench.XXXXXX)
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
SERVER_PID=""
if [[ $POSTGRES == 1 ]]; then
    DB_NAME="podo_bench_$(date +%s)"
    psql "$PG_ADMIN" -q -c "CREATE DATABASE $DB_NAME"
    DATABASE_URL="${PG_ADMIN%/*}/$DB_NAME"
    BACKEND="PostgreSQL"
else
    DATABASE_URL="sqlite://$WORK/data/podo.db"
    BACKEND="SQLite"
fi


cleanup() {
    stop_server
    if [[ $POSTGRES == 1 ]]; then
        psql "$PG_ADMIN" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Extra environment for the next server (the push scenario's CA and policy).
SERVER_ENV=()
start_server() {
    env ${SERVER_ENV[@]+"${SERVER_ENV[@]}"} "$BIN/podo" serve --bind "127.0.0.1:$PORT" --database-url "$DATABASE_URL" \
        --data-dir "$WORK/data" --static-dir static >>"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -fs "$SERVER/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the server did not start; its log:" >&2
    tail -20 "$WORK/server.log" >&2
    exit 1
}

COMMANDS=()
# load NAME SUBCOMMAND ARGS...: runs podo-load against a fresh server, keeps its JSON.
load() {
    local name=$1
    shift
    start_server
    local cmd=("$BIN/podo-load" "$@" --server "$SERVER" --tokens "$WORK/tokens.json"
        --server-pid "$SERVER_PID" --json)
    COMMANDS+=("podo-load $* --server $SERVER --tokens tokens.json --server-pid \$PID --json")
    echo "== $name: podo-load $*" >&2
    # A non-zero exit (a correctness violation) is recorded in the table, not fatal here.
    "${cmd[@]}" >"$RESULTS/$name.json" || echo "   ($name exited with $?)" >&2
    jq -c '{figures, latency: (.latency | map_values({p50_ms, p99_ms})), violations}' \
        "$RESULTS/$name.json" >&2 || true
    stop_server
}

echo "== seed 5,000 families with boards ($BACKEND)" >&2
"$BIN/podo-load" seed --database-url "$DATABASE_URL" --families 5000 --boards \
    --out "$WORK/tokens.json"

CHAT=0
start_server
[[ $(curl -s -o /dev/null -w '%{http_code}' "$SERVER/api/chat/ws") == 401 ]] && CHAT=1
stop_server

# Issue #4's benchmark: board changes alone. Then the same with both members' SSE streams open,
# so every change is also fanned out twice.
load board board --families 1000 --rate 0 --duration 20 --streams-per-member 0
load board_sse board --families 1000 --rate 0 --duration 20
load sse sse-idle --families 5000 --idle 10 --rate 2000 --duration 15
if [[ $CHAT == 1 ]]; then
    load chat_max chat --families 2000 --rate 0 --window 8 --duration 15
    # The tail at 10,000/s varies from run to run and grows with the database (each run adds
    # 400,000 messages): three runs in a row, judged on the median. 40 s, so that each run holds
    # a WAL restart (every ~26 s at this rate, see src/store/checkpoint.rs), the one pause in
    # commits.
    for i in 1 2 3; do
        load "chat_10k_$i" chat --families 2000 --rate 10000 --duration 40
    done
    load storm storm --families 500 --rate 2000 --drop-percent 30 --every 3 --duration 20
    load connections chat --families 4000 --sse --rate 200 --duration 10
    # Web push to an HTTPS push service that podo-load runs on loopback, with a CA made here that
    # the server trusts only through SSL_CERT_FILE.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=podo bench push CA" -keyout "$WORK/push-ca.key" -out "$WORK/push-ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$WORK/push.key" -out "$WORK/push.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/push.ext"
    openssl x509 -req -in "$WORK/push.csr" -CA "$WORK/push-ca.pem" -CAkey "$WORK/push-ca.key" \
        -CAcreateserial -days 2 -extfile "$WORK/push.ext" -out "$WORK/push.pem" 2>/dev/null
    SERVER_ENV=("SSL_CERT_FILE=$WORK/push-ca.pem" "PODO_PUSH_ALLOW_PRIVATE=true")
    load push push --families 1000 --rate 1000 --duration 20 \
        --sink-cert "$WORK/push.pem" --sink-key "$WORK/push.key"
    SERVER_ENV=()
fi

# Sign-ups and logins, each an argon2id hash of 19 MiB: the server's RSS after 2,000 of each at
# 64 at once (unbounded hashing once left ~10 GiB). It creates its own accounts; no token file.
start_server
COMMANDS+=("podo-load signup --families 1000 --concurrency 64 --server $SERVER --server-pid \$PID --json")
echo "== signup: podo-load signup --families 1000 --concurrency 64" >&2
"$BIN/podo-load" signup --families 1000 --concurrency 64 --server "$SERVER" \
    --server-pid "$SERVER_PID" --json >"$RESULTS/signup.json" || echo "   (signup exited with $?)" >&2
jq -c '{figures, violations}' "$RESULTS/signup.json" >&2 || true
stop_server

# ---- results.md ----
fig() { jq -r "$2 // empty" "$RESULTS/$1.json" 2>/dev/null || true; }
row() { # scenario, figure, value, goal, met
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" "$5"
}
# met VALUE OP LIMIT: "yes"/"no" (or "n/a" without a value).
met() {
    [[ -z "$1" ]] && { echo "n/a"; return; }
    if awk -v v="$1" -v l="$3" "BEGIN { exit !(v $2 l) }"; then echo yes; else echo no; fi
}
round() { [[ -z "$1" ]] && echo "n/a" || printf '%.*f' "${2:-1}" "$1"; }

{
    echo "# podo benchmark ($BACKEND)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'). Written by \`bench/run.sh$([[ $POSTGRES == 1 ]] && echo ' --postgres')\`;" \
        "podo-load and the server share the machine."
    echo
    echo "| scenario | figure | measured | goal | met? |"
    echo "|---|---|---|---|---|"
    v=$(fig board '.figures["acknowledged changes/s"]')
    row "board, 1,000 families, max rate, no streams" "acknowledged board changes/s" "$(round "$v" 0)" "≥ 20,000" "$(met "$v" '>=' 20000)"
    row "" "persister batch size mean / p99 ≤" "$(round "$(fig board '.figures["batch size mean"]')") / $(fig board '.figures["batch size p99 ≤"]')" "" ""
    row "" "change → ack p50 / p99 ms" "$(round "$(fig board '.latency["change → ack"].p50_ms')") / $(round "$(fig board '.latency["change → ack"].p99_ms')")" "" ""
    row "" "server CPU (cores)" "$(round "$(fig board '.figures["server CPU"]')" 2)" "" ""
    row "board, same, both members' streams open" "acknowledged board changes/s" "$(round "$(fig board_sse '.figures["acknowledged changes/s"]')" 0)" "" ""
    row "" "change → ack / → last stream p99 ms" "$(round "$(fig board_sse '.latency["change → ack"].p99_ms')") / $(round "$(fig board_sse '.latency["change → last SSE of family"].p99_ms')")" "" ""
    v=$(fig sse '.figures["server RSS per idle stream"]')
    row "sse-idle, 10,000 streams" "server RSS per idle stream (KiB)" "$(round "$v")" "≤ 8" "$(met "$v" '<=' 8)"
    v=$(fig sse '.figures["db queries/s while idle"]')
    row "" "database queries/s while idle" "$(round "$v")" "0" "$(met "$v" '==' 0)"
    v=$(fig sse '.latency["change → last SSE of family"].p99_ms')
    row "sse, 2,000 changes/s" "change → last stream p50 / p99 ms" "$(round "$(fig sse '.latency["change → last SSE of family"].p50_ms')") / $(round "$v")" "p99 ≤ 20" "$(met "$v" '<=' 20)"
    if [[ $CHAT == 1 ]]; then
        v=$(fig chat_max '.figures["server committed messages/s"]')
        row "chat, 2,000 families, max rate" "committed messages/s" "$(round "$v" 0)" "≥ 20,000" "$(met "$v" '>=' 20000)"
        runs=() p50s=() partners=() restarts=()
        for i in 1 2 3; do
            runs+=("$(fig "chat_10k_$i" '.latency["send → ack"].p99_ms')")
            p50s+=("$(round "$(fig "chat_10k_$i" '.latency["send → ack"].p50_ms')")")
            partners+=("$(round "$(fig "chat_10k_$i" '.latency["send → partner message"].p99_ms')")")
            r=$(fig "chat_10k_$i" '.figures["WAL restarts"]')
            pause=$(fig "chat_10k_$i" '.figures["WAL restart pause mean"]')
            restarts+=("$(round "$r" 0)${pause:+ ($(round "$pause" 0) ms)}")
        done
        v=$(printf '%s\n' "${runs[@]}" | grep -v '^$' | sort -g | sed -n 2p)
        row "chat at 10,000/s, 2,000 families, 3 runs" "send → ack p99 ms, median (runs)" "$(round "$v") ($(for r in "${runs[@]}"; do round "$r"; echo -n ' '; done | xargs | sed 's/ / · /g'))" "p99 ≤ 20" "$(met "$v" '<=' 20)"
        row "" "send → ack p50 ms (runs)" "$(IFS=/; echo "${p50s[*]}" | sed 's|/| · |g')" "" ""
        row "" "send → partner p99 ms (runs)" "$(IFS=/; echo "${partners[*]}" | sed 's|/| · |g')" "" ""
        [[ $POSTGRES == 0 ]] && row "" "WAL restarts (commits paused, mean) (runs)" "$(IFS=/; echo "${restarts[*]}" | sed 's|/| · |g')" "" ""
        v=$(fig storm '.violations')
        row "storm, 30 % dropped every 3 s" "lost + duplicated + reordered" "$v ($(fig storm '.figures.reconnects') reconnects)" "0" "$(met "$v" '==' 0)"
        v=$(fig connections '.figures["peak open connections"]')
        row "connections (WS + SSE)" "concurrent connections, one server" "$(round "$v" 0)" "≥ 16,000" "$(met "$v" '>=' 16000)"
        row "web push at 1,000/s to a local HTTPS push service, 1,000 families" "send → push received p50 / p99 ms" "$(round "$(fig push '.latency["send → push received"].p50_ms')") / $(round "$(fig push '.latency["send → push received"].p99_ms')")" "" ""
        v=$(fig push '.violations')
        row "" "pushes received/s; missing or unknown" "$(round "$(fig push '.figures["pushes received/s"]')" 0); $v" "0 missing" "$(met "$v" '==' 0)"
        row "" "server CPU (cores)" "$(round "$(fig push '.figures["server CPU"]')" 2)" "" ""
    else
        row "chat" "(the server has no /api/chat/ws yet)" "" "" ""
    fi
    v=$(fig signup '.figures["server RSS after"]')
    row "signup, 2,000 sign-ups then 2,000 logins, 64 at once" "server RSS after (MiB)" "$(round "$v" 0) (peak $(round "$(fig signup '.figures["server peak RSS"]')" 0))" "≤ 256" "$(met "$v" '<=' 256)"
    row "" "sign-ups/s / logins/s" "$(round "$(fig signup '.figures["sign-ups/s"]')" 0) / $(round "$(fig signup '.figures["logins/s"]')" 0)" "" ""
    echo
    echo "Commands (server: \`podo serve --bind 127.0.0.1:$PORT --database-url <fresh $BACKEND>\`, restarted per scenario;"
    echo "seed: \`podo-load seed --database-url <url> --families 5000 --boards --out tokens.json\`):"
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
