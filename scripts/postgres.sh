#!/usr/bin/env bash
# A real PostgreSQL server for the tests and the README's examples: Debian's `postgresql`
# package, a fresh cluster in a folder of yours, bound to 127.0.0.1 only, stopped by its PID.
#
#   scripts/postgres.sh bindir              prints the server's bin folder; fails when there is none
#   scripts/postgres.sh install             installs Debian's postgresql (and openssl) when missing
#                                           (apt-get; prints the server's bin folder)
#   scripts/postgres.sh start DIR [PORT]    creates a cluster in DIR (once) and starts it;
#                                           prints its URL (postgres://weir:...@127.0.0.1:PORT/weir)
#   scripts/postgres.sh url DIR             prints the URL of the server started in DIR
#   scripts/postgres.sh stop DIR            stops the server started in DIR, by its PID
#   scripts/postgres.sh tls DIR             makes the server started in DIR accept TLS only: a new
#                                           CA and a server certificate for 127.0.0.1 and
#                                           localhost (openssl), plain connections refused;
#                                           prints the CA's certificate file (for sslrootcert)
#
# The cluster has one user `weir` with a random password (kept in DIR/password) and a database
# `weir`; password authentication (scram-sha-256) on 127.0.0.1, nothing on other addresses.
# PostgreSQL refuses to run as root: as root the cluster belongs to the package's `postgres`
# user. WEIR_PG_BIN=/path/to/bin uses another installation's initdb / pg_ctl.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

# The folder with initdb, pg_ctl and postgres: WEIR_PG_BIN, else the newest Debian version.
bindir() {
  if [[ -n "${WEIR_PG_BIN:-}" ]]; then
    [[ -x "$WEIR_PG_BIN/pg_ctl" ]] || die "WEIR_PG_BIN=$WEIR_PG_BIN has no pg_ctl"
    echo "$WEIR_PG_BIN"
    return
  fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [[ -n "$found" && -x "$found/pg_ctl" ]] || return 1
  echo "$found"
}

install() {
  if bindir >/dev/null && command -v openssl >/dev/null; then
    bindir
    return
  fi
  # openssl makes the certificates of `tls` (the TLS tests).
  echo "postgres.sh: installing Debian's postgresql and openssl packages" >&2
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql openssl >&2
  # The package starts a cluster of its own on port 5432; the tests use their own.
  $sudo service postgresql stop >/dev/null 2>&1 || true
  bindir || die "postgresql was installed but no /usr/lib/postgresql/*/bin/pg_ctl was found"
}

# Runs a server program as the cluster's owner (root cannot own a cluster).
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

url() {
  local dir=${1:?usage: postgres.sh url DIR}
  [[ -f "$dir/port" && -f "$dir/password" ]] || die "no server was started in $dir"
  echo "postgres://weir:$(cat "$dir/password")@127.0.0.1:$(cat "$dir/port")/weir"
}

init_cluster() {
  local dir=$1 bin=$2
  [[ -d "$dir/data" ]] && return
  head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
  chmod 600 "$dir/password"
  mkdir -p "$dir/data"
  if [[ $(id -u) -eq 0 ]]; then
    chown -R postgres "$dir"
    chmod 700 "$dir/data"
    # The server's user must be able to walk down to DIR (a test's temporary folder is 0700).
    local up=$dir
    while [[ "$up" != / ]]; do
      up=$(dirname "$up")
      [[ -x "$up" ]] && runuser -u postgres -- test -x "$up" || chmod o+x "$up"
    done
  fi
  as_owner "$bin/initdb" -D "$dir/data" -U weir --pwfile="$dir/password" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
}

start() {
  local dir=${1:?usage: postgres.sh start DIR [PORT]} port=${2:-} bin pid
  bin=$(install)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f "$dir/postgres.pid" ]] && kill -0 "$(cat "$dir/postgres.pid")" 2>/dev/null; then
    die "a server already runs from $dir (PID $(cat "$dir/postgres.pid")); stop it first"
  fi
  if [[ -z "$port" ]]; then
    port=${WEIR_PG_PORT:-15432}
    while listening "$port"; do port=$((port + 1)); done
  elif listening "$port"; then
    die "port $port on 127.0.0.1 is taken; pick another"
  fi
  init_cluster "$dir" "$bin"
  echo "$port" >"$dir/port"
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$dir' -c fsync=off" \
    start >/dev/null || { tail -20 "$dir/postgres.log" >&2; die "the server did not start"; }
  pid=$(head -1 "$dir/data/postmaster.pid")
  echo "$pid" >"$dir/postgres.pid"
  # The database `weir`, made on the first start (a restart finds it).
  if [[ ! -f "$dir/created" ]]; then
    PGPASSWORD=$(cat "$dir/password") "$bin/createdb" -h 127.0.0.1 -p "$port" -U weir weir
    touch "$dir/created"
  fi
  url "$dir"
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR} pid
  [[ -f "$dir/postgres.pid" ]] || die "no server was started in $dir"
  pid=$(cat "$dir/postgres.pid")
  # SIGINT is PostgreSQL's fast shutdown: open transactions are rolled back.
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/postgres.pid"; return; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/postgres.pid"
}

tls() {
  local dir=${1:?usage: postgres.sh tls DIR} bin
  [[ -f "$dir/postgres.pid" ]] || die "no server was started in $dir"
  command -v openssl >/dev/null || die "openssl is needed to make certificates (apt-get install openssl)"
  bin=$(install)
  dir=$(cd "$dir" && pwd)
  local certs="$dir/tls"
  mkdir -p "$certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=weir test CA" \
    -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$certs/san.ext"
  openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 2 -extfile "$certs/san.ext" -out "$certs/server.crt" 2>/dev/null
  cp "$certs/server.crt" "$certs/server.key" "$dir/data/"
  chmod 600 "$dir/data/server.key"
  [[ $(id -u) -eq 0 ]] && chown postgres "$dir/data/server.crt" "$dir/data/server.key"
  printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" \
    >>"$dir/data/postgresql.conf"
  # Plain connections are refused: a client that did not use TLS fails loudly.
  { echo "hostnossl all all 0.0.0.0/0 reject"; cat "$dir/data/pg_hba.conf"; } >"$dir/pg_hba.new"
  cat "$dir/pg_hba.new" >"$dir/data/pg_hba.conf" && rm "$dir/pg_hba.new"
  as_owner "$bin/pg_ctl" -D "$dir/data" reload >/dev/null
  # A reload is asynchronous: wait until TLS is offered.
  for _ in $(seq 1 50); do
    PGPASSWORD=$(cat "$dir/password") PGSSLMODE=require "$bin/psql" -h 127.0.0.1 \
      -p "$(cat "$dir/port")" -U weir -d weir -Atc "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "$certs/ca.crt"
}

case "${1:-}" in
  bindir) bindir || die "no PostgreSQL server is installed (scripts/postgres.sh install)" ;;
  install) install ;;
  start) shift; start "$@" ;;
  url) shift; url "$@" ;;
  stop) shift; stop "$@" ;;
  tls) shift; tls "$@" ;;
  *) die "usage: postgres.sh bindir | install | start DIR [PORT] | url DIR | stop DIR | tls DIR" ;;
esac
