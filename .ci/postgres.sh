#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from Debian's packages, without docker.
#
#   eval "$(.ci/postgres.sh)"            # start; exports BUDGETNAS_TEST_POSTGRES_URL and _DIR
#   .ci/postgres.sh stop "$BUDGETNAS_TEST_POSTGRES_DIR"   # stop it and delete its files
#
# start: installs the `postgresql` package if no initdb/postgres binaries are found (only as
# root and unless BUDGETNAS_PG_INSTALL=0), creates a cluster in a fresh temporary folder,
# listens on 127.0.0.1 at a free port (its socket stays inside that folder, so it never clashes
# with a system server), creates the role `budgetnas` with a random password and the database
# `budgetnas_test`, and prints `export ...` lines on stdout (progress goes to stderr).
# initdb refuses to run as root, so as root the server runs as the `postgres` user.
# Exit codes: 0 ok, 3 no PostgreSQL binaries (and installing them was not allowed), 1 other.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    local candidate
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    # Debian installs the server binaries outside PATH, one folder per major version.
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Run a command as the server's owner: ourselves, or `postgres` when we are root.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

start() {
    local bindir
    if ! bindir="$(find_bindir)"; then
        if [[ "${BUDGETNAS_PG_INSTALL:-1}" == 0 || "$(id -u)" != 0 ]]; then
            log "no PostgreSQL server binaries (initdb, pg_ctl) found; install Debian's postgresql package"
            exit 3
        fi
        log "installing PostgreSQL from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq postgresql >&2
        bindir="$(find_bindir)" || { log "postgresql installed but initdb not found"; exit 1; }
    fi

    PG_USER="$(id -un)"
    if [[ "$(id -u)" == 0 ]]; then
        PG_USER=postgres
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi

    local dir port password url
    dir="$(mktemp -d "${TMPDIR:-/tmp}/budgetnas-pg.XXXXXX")"
    chmod 755 "$dir"
    [[ "$(id -u)" == 0 ]] && chown "$PG_USER" "$dir"
    port="$(free_port)"
    password="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

    printf '%s\n' "$password" >"$dir/pwfile"
    [[ "$(id -u)" == 0 ]] && chown "$PG_USER" "$dir/pwfile"
    # Password (scram) over TCP, as a real deployment would; trust on the private socket.
    as_owner "$bindir/initdb" -D "$dir/data" -U budgetnas --pwfile="$dir/pwfile" \
        --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
        || { log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$dir/pwfile"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" start >&2 \
        || { log "server did not start:"; cat "$dir/server.log" >&2; exit 1; }
    as_owner "$bindir/createdb" -h "$dir" -p "$port" -U budgetnas budgetnas_test

    url="postgresql://budgetnas:${password}@127.0.0.1:${port}/budgetnas_test"
    echo "$bindir" >"$dir/bindir"
    echo "$PG_USER" >"$dir/owner"
    log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') running on 127.0.0.1:$port, files in $dir"
    echo "export BUDGETNAS_TEST_POSTGRES_URL='$url'"
    echo "export BUDGETNAS_TEST_POSTGRES_DIR='$dir'"
}

stop() {
    local dir="${1:-${BUDGETNAS_TEST_POSTGRES_DIR:-}}"
    [[ -n "$dir" && -f "$dir/bindir" ]] || { log "stop: no server folder given (or it has no bindir file)"; exit 1; }
    PG_USER="$(cat "$dir/owner")"
    as_owner "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    rm -rf "$dir"
}

case "${1:-start}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) log "usage: $0 [start|stop DIR]"; exit 2 ;;
esac
