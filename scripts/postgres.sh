#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests: under /tmp, on a spare loopback port, never
# touching a system cluster.
#   bash scripts/postgres.sh install   # Debian's postgresql package if initdb is missing (root)
#   eval "$(bash scripts/postgres.sh start)"   # prints: export NETRAIN_TEST_PG_URI=...
#   bash scripts/postgres.sh stop
# The cluster trusts loopback connections of its own user (a throwaway test database; it
# listens on 127.0.0.1 only). NETRAIN_PG_DIR (default /tmp/netrain-pg) holds it.
set -euo pipefail
DIR=${NETRAIN_PG_DIR:-/tmp/netrain-pg}
USER_NAME=netrain
DB=netrain

bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

# PostgreSQL refuses to run as root: as root, run it as the postgres user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

spare_port() {
  python3 - <<'EOF'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
}

case "${1:-}" in
  install)
    if bindir >/dev/null; then exit 0; fi
    if [ "$(id -u)" != 0 ]; then
      echo "postgres.sh: PostgreSQL is not installed; as root: apt-get install postgresql" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    # Debian starts a system cluster on 5432; we do not use it.
    ;;
  start)
    BIN=$(bindir) || { echo "postgres.sh: initdb not found: run 'postgres.sh install'" >&2; exit 1; }
    if [ -f "$DIR/port" ] && as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      port=$(cat "$DIR/port")
    else
      rm -rf "$DIR"
      mkdir -p "$DIR"
      [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
      port=$(spare_port)
      as_owner "$BIN/initdb" -D "$DIR/data" -U "$USER_NAME" --auth=trust -E UTF8 >/dev/null
      as_owner sh -c "echo $port > '$DIR/port'"
      as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$DIR \
            -c max_connections=200" start >/dev/null
      as_owner "$BIN/createdb" -h 127.0.0.1 -p "$port" -U "$USER_NAME" "$DB"
    fi
    echo "export NETRAIN_TEST_PG_URI=postgresql+psycopg2://$USER_NAME@127.0.0.1:$port/$DB"
    ;;
  stop)
    BIN=$(bindir) || exit 0
    if [ -d "$DIR/data" ]; then
      as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$DIR"
    ;;
  *)
    echo "usage: postgres.sh install|start|stop" >&2
    exit 2
    ;;
esac
