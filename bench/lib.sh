# Shared by the bench scripts (sourced): stopping and waiting for the server under test, and a
# fresh copy of the seeded SQLite file. They use the caller's SERVER (base URL), SERVER_PID and
# WORK (the run's directory, with server.log and seed.db).

# Stops the server: TERM, up to 10 s for it to finish, then KILL.
stop_server() {
    if [[ -n "${SERVER_PID:-}" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

# Waits up to 30 s for $SERVER/healthz; exits with the server's log if it does not answer (or
# the server exited).
wait_healthy() {
    for _ in $(seq 300); do
        curl -fs "$SERVER/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the server did not start; its log:" >&2
    tail -20 "$WORK/server.log" >&2
    exit 1
}

# $WORK/run.db: a fresh copy of $WORK/seed.db.
fresh_db() {
    rm -f "$WORK"/run.db*
    # The seed's last writes may still be in its WAL.
    for suffix in "" -wal -shm; do
        if [[ -e "$WORK/seed.db$suffix" ]]; then cp "$WORK/seed.db$suffix" "$WORK/run.db$suffix"; fi
    done
}
