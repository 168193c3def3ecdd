#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the registry tests, on 127.0.0.1:${PGPORT:-55432}.
# Idempotent and quick when already running. Installs Debian's server if missing (needs root or sudo).
# stdout is exactly one line to eval:  eval "$(.ci/start-postgres.sh)"
#   -> export LLM_ASSETS_TEST_POSTGRES_URL=postgresql://llm_assets:...@127.0.0.1:55432/llm_assets_test
# Logs go to stderr. Data lives in ${LLM_ASSETS_PG_DIR:-/tmp/llm-assets-pg} (delete it to start over).
set -euo pipefail

PORT="${PGPORT:-55432}"
DIR="${LLM_ASSETS_PG_DIR:-/tmp/llm-assets-pg}"
DB=llm_assets_test
USER_NAME=llm_assets
PASSWORD=llm_assets_test_pw   # a throwaway cluster bound to 127.0.0.1; not a secret
log() { echo "start-postgres: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

BIN="$(bindir)"
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    log "installing postgresql (apt-get)"
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >&2
    BIN="$(bindir)"
fi

# initdb and postgres refuse to run as root: run them as the postgres system user then.
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" postgres
    RUN_AS=(runuser -u postgres --)
else
    RUN_AS=()
fi

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres "$DIR" && chmod 700 "$DIR"

if ! "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
        log "initdb in $DIR/data"
        printf '%s\n' "$PASSWORD" > "$DIR/pwfile"
        [ "$(id -u)" = 0 ] && chown postgres "$DIR/pwfile"
        "${RUN_AS[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres --pwfile="$DIR/pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null
        rm -f "$DIR/pwfile"
    fi
    log "starting on 127.0.0.1:$PORT"
    # Durability is pointless for a throwaway test cluster; these make it start and commit fast.
    "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 30 start \
        -o "-h 127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2
fi

psql_admin() { "${RUN_AS[@]}" "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'")" != 1 ]; then
    psql_admin -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'" >&2
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE $DB OWNER $USER_NAME" >&2
fi

echo "export LLM_ASSETS_TEST_POSTGRES_URL=postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
