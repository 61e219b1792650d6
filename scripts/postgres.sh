#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for the collector tests.
#
#   scripts/postgres.sh start   -> prints two lines: the database URL, the cluster directory
#   scripts/postgres.sh stop DIR
#
# Uses Debian's server binaries (scripts/system-deps.sh installs `postgresql`);
# as root the cluster runs as the `postgres` user. A free port, a random password
# (scram-sha-256), fsync off: fast, isolated, nothing left behind after `stop`.
set -euo pipefail
cmd=${1:-}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [[ -z $bindir || ! -x $bindir/initdb ]]; then
  echo "postgres.sh: PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/system-deps.sh)" >&2
  exit 1
fi
if [[ $(id -u) -eq 0 ]]; then as=(runuser -u postgres --); else as=(); fi

case $cmd in
start)
  dir=$(mktemp -d /tmp/inferfleet-pg.XXXXXX)
  chmod 700 "$dir"
  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf '%s\n' "$password" >"$dir/pwfile"
  [[ $(id -u) -eq 0 ]] && chown -R postgres: "$dir"
  if ! "${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" \
      --auth-host=scram-sha-256 --auth-local=scram-sha-256 -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
    echo "postgres.sh: initdb failed:" >&2; tail -5 "$dir/initdb.log" >&2; exit 1
  fi
  rm -f "$dir/pwfile"
  if ! "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" start >/dev/null; then
    echo "postgres.sh: the server did not start:" >&2; tail -5 "$dir/server.log" >&2; exit 1
  fi
  echo "postgresql://postgres:$password@127.0.0.1:$port/postgres"
  echo "$dir"
  ;;
stop)
  dir=${2:?usage: postgres.sh stop DIR}
  [[ -d $dir/data ]] && "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
