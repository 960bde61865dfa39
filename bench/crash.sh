#!/usr/bin/env bash
# Kill -9 under load: `podo-load crash` on a fresh database, and the report it gives.
#
#   bench/crash.sh              # SQLite in a temp dir, writes bench/results-crash.md
#   bench/crash.sh --postgres   # a fresh PostgreSQL database on postgres://postgres@127.0.0.1:5432
#                               # (dropped at the end), writes bench/results-crash-postgres.md
#   bench/crash.sh --sabotage   # the same run, but every restart deletes each family's newest
#                               # chat message and takes a grape off every active board that has
#                               # one to spare: the check must fail (this script then exits 0)
#
# Builds the release binaries, seeds 500 families with a board of 100 grapes each, and runs
# `podo-load crash`, which starts the server itself, drives chat at 5,000 messages/s and board
# changes at 1,000/s, SIGKILLs the server five times at random moments (3-8 s after each start),
# restarts it on the same database, and after the last restart checks through the API that every
# acknowledged message and board change is there exactly once. Bounded: podo-load stops by
# itself (and has a hard deadline); the run takes about a minute and a half after the build.
set -euo pipefail
cd "$(dirname "$0")/.."

POSTGRES=0
SABOTAGE=0
for arg in "$@"; do
    case $arg in
        --postgres) POSTGRES=1 ;;
        --sabotage) SABOTAGE=1 ;;
        *) echo "usage: bench/crash.sh [--postgres] [--sabotage]" >&2; exit 64 ;;
    esac
done
OUT=bench/results-crash.md
[[ $POSTGRES == 1 ]] && OUT=bench/results-crash-postgres.md
PG_ADMIN=${PODO_BENCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${PODO_BENCH_PORT:-18090}
KILLS=${PODO_CRASH_KILLS:-5}
FAMILIES=500
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$CARGO_TARGET_DIR/release"
# A fixed key so the seed can mint tokens the server accepts.
export PODO_JWT_SECRET=podo-bench-secret
export RUST_LOG=${RUST_LOG:-warn}

for tool in jq; do
    command -v "$tool" >/dev/null || { echo "bench/crash.sh needs $tool" >&2; exit 1; }
done
[[ $POSTGRES == 1 ]] && { command -v psql >/dev/null || { echo "--postgres needs psql" >&2; exit 1; }; }
[[ $SABOTAGE == 1 && $POSTGRES == 0 ]] && { command -v sqlite3 >/dev/null || { echo "--sabotage needs sqlite3" >&2; exit 1; }; }

# 1,000 chat sockets and 1,000 board streams on each side, plus the board requests.
ulimit -n "$(ulimit -Hn)"

cargo build --release -p podo -p podo-load

WORK=$(mktemp -d -t podo-crash.XXXXXX)
mkdir -p "$WORK/data"
if [[ $POSTGRES == 1 ]]; then
    DB_NAME="podo_crash_$(date +%s)"
    psql "$PG_ADMIN" -q -c "CREATE DATABASE $DB_NAME"
    DATABASE_URL="${PG_ADMIN%/*}/$DB_NAME"
    BACKEND="PostgreSQL"
else
    DATABASE_URL="sqlite://$WORK/data/podo.db"
    BACKEND="SQLite"
fi

cleanup() {
    # podo-load kills its server on every way out; this is for a podo-load that was killed.
    if [[ -f "$WORK/server.pid" ]]; then
        kill -KILL "$(cat "$WORK/server.pid")" 2>/dev/null || true
    fi
    if [[ $POSTGRES == 1 ]]; then
        psql "$PG_ADMIN" -q -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== seed $FAMILIES families with boards ($BACKEND)" >&2
"$BIN/podo-load" seed --database-url "$DATABASE_URL" --families "$FAMILIES" --boards \
    --board-size 100 --out "$WORK/tokens.json"

SERVE="$BIN/podo serve --bind 127.0.0.1:$PORT --database-url $DATABASE_URL --data-dir $WORK/data --static-dir static"
if [[ $SABOTAGE == 1 ]]; then
    # What a server that loses acknowledged writes would look like after a restart.
    SQL="DELETE FROM messages WHERE id IN (SELECT MAX(id) FROM messages GROUP BY family_id);
         UPDATE boards SET granted = granted - 1 WHERE status = 'active' AND granted > attached;"
    if [[ $POSTGRES == 1 ]]; then
        SPOIL="psql '$DATABASE_URL' -q -c \"$SQL\""
    else
        SPOIL="sqlite3 '$WORK/data/podo.db' \"$SQL\""
    fi
    cat >"$WORK/sabotage.sh" <<EOF
#!/bin/sh
if [ -f '$WORK/started' ]; then $SPOIL; fi
touch '$WORK/started'
exec "\$@"
EOF
    chmod +x "$WORK/sabotage.sh"
    SERVE="$WORK/sabotage.sh $SERVE"
fi

CMD=("$BIN/podo-load" crash --serve "$SERVE" --server "http://127.0.0.1:$PORT"
    --tokens "$WORK/tokens.json" --kills "$KILLS" --kill-min 3 --kill-max 8 --after 5
    --chat-rate 5000 --board-rate 1000
    --server-log "$WORK/server.log" --pid-file "$WORK/server.pid" --json)
echo "== podo-load crash --kills $KILLS --kill-min 3 --kill-max 8 --after 5 --chat-rate 5000 --board-rate 1000" >&2
STATUS=0
"${CMD[@]}" >"$WORK/crash.json" || STATUS=$?
if [[ ! -s "$WORK/crash.json" ]]; then
    echo "podo-load crash gave no report (exit $STATUS); the server's log:" >&2
    tail -30 "$WORK/server.log" >&2 || true
    exit 1
fi
jq -c '{checks, violations}' "$WORK/crash.json" >&2

if [[ $SABOTAGE == 1 ]]; then
    if [[ $STATUS == 3 ]]; then
        echo "sabotage: the check caught it (exit 3), as it must" >&2
        exit 0
    fi
    echo "sabotage: the check did NOT catch the lost writes (exit $STATUS)" >&2
    exit 1
fi

# ---- results-crash*.md ----
f() { jq -r ".figures[\"$1\"] // empty" "$WORK/crash.json"; }
ms() { awk -v v="$1" 'BEGIN { if (v == "" || v < 0) print "n/a"; else printf "%.0f", v * 1000 }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }'; }
{
    echo "# podo crash scenario ($BACKEND)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
        "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'). Written by \`bench/crash.sh$([[ $POSTGRES == 1 ]] && echo ' --postgres')\`;" \
        "podo-load and the server share the machine. $FAMILIES families, chat at $(f 'chat target rate') messages/s" \
        "and board changes at $(f 'board target rate')/s (targets), kill moments from seed $(f seed)."
    echo
    echo "Per kill: what the killed process had acknowledged, how much of it was lost or duplicated"
    echo "(checked after the last restart, through the API), what was in flight at the kill"
    echo "(sent, not yet answered: sent again after the restart with the same \`client_id\` / \`key\`),"
    echo "and how long until the new process answered \`/healthz\` and acknowledged its first write."
    echo
    echo "| kill | load before it (s) | chat acknowledged (/s) | lost | duplicated | in flight | board changes acknowledged (/s) | lost | duplicated | in flight | /healthz back (ms) | first write (ms) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for k in $(seq "$KILLS"); do
        after=$(f "kill $k after")
        ca=$(f "kill $k chat acknowledged")
        ba=$(f "kill $k board acknowledged")
        echo "| $k | $(printf '%.1f' "$after") | $ca ($(rate "$ca" "$after")) | $(f "kill $k chat lost") | $(f "kill $k chat duplicated") | $(f "kill $k chat in flight") | $ba ($(rate "$ba" "$after")) | $(f "kill $k board lost") | $(f "kill $k board duplicated") | $(f "kill $k board in flight") | $(ms "$(f "kill $k healthz back")") | $(ms "$(f "kill $k first write")") |"
    done
    echo "| last process (not killed) | | $(f 'not killed chat acknowledged') | $(f 'not killed chat lost') | $(f 'not killed chat duplicated') | | $(f 'not killed board acknowledged') | $(f 'not killed board lost') | $(f 'not killed board duplicated') | | | |"
    echo "| **total** | | **$(f 'chat acknowledged')** | **$(jq '[.figures | to_entries[] | select(.key | test("chat lost$")) | .value] | add' "$WORK/crash.json")** | **$(jq '[.figures | to_entries[] | select(.key | test("chat duplicated$")) | .value] | add' "$WORK/crash.json")** | $(f 'chat in flight at kills') | **$(f 'board acknowledged')** | **$(jq '[.figures | to_entries[] | select(.key | test("board lost$")) | .value] | add' "$WORK/crash.json")** | **$(jq '[.figures | to_entries[] | select(.key | test("board duplicated$")) | .value] | add' "$WORK/crash.json")** | $(f 'board in flight at kills') | | worst $(ms "$(f 'kill → first write, worst')") |"
    echo
    echo "Every check (a non-zero one fails the run, exit 3): $(jq -r '.checks | to_entries | map("\(.key) \(.value)") | join(", ")' "$WORK/crash.json")."
    echo
    echo "Command (after \`podo-load seed --database-url <fresh $BACKEND> --families $FAMILIES --boards --board-size 100 --out tokens.json\`):"
    echo
    echo '```sh'
    echo "podo-load crash --serve \"podo serve --bind 127.0.0.1:$PORT --database-url <url> ...\" --server http://127.0.0.1:$PORT \\"
    echo "    --tokens tokens.json --kills $KILLS --kill-min 3 --kill-max 8 --after 5 --chat-rate 5000 --board-rate 1000 --json"
    echo '```'
    echo
    echo "<details><summary>full JSON</summary>"
    echo
    echo '```json'
    jq . "$WORK/crash.json"
    echo '```'
    echo "</details>"
} >"$OUT"
echo "wrote $OUT" >&2
exit "$STATUS"
