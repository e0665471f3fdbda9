#!/usr/bin/env bash
# A real Kafka-protocol broker for the tests, benchmarks and the README's quick start: Tansu 0.6.0
# (Apache-2.0), bound to 127.0.0.1 only, storing its log in SQLite so a restart keeps the data.
#
#   scripts/tansu.sh install               builds Tansu into the cache once (prints the binary)
#   scripts/tansu.sh binary                prints where the binary is (or would be)
#   scripts/tansu.sh start DIR [PORT]      starts a broker with its data, PID and log in DIR;
#                                          prints its bootstrap address (127.0.0.1:PORT)
#   scripts/tansu.sh stop DIR              stops the broker started in DIR, by its PID
#   scripts/tansu.sh topic DIR NAME [PARTITIONS]
#                                          creates a topic on the broker started in DIR
#
# The binary is cached in ${WEIR_CACHE_DIR:-~/.cache/weir}/tansu-0.6.0 and reused when present
# (`cargo install` takes 20-45 minutes on a 2-core machine). WEIR_TANSU=/path/to/tansu uses a
# binary you already have. WEIR_TANSU_STORAGE=memory://tansu/ keeps the log in memory instead
# (faster, lost when the broker stops: for benchmarks, not for the restart tests).
set -euo pipefail

version=0.6.0
cache="${WEIR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}/tansu-$version"

die() { echo "tansu.sh: $*" >&2; exit 1; }

# The Tansu binary: WEIR_TANSU, else the cached build.
binary() {
  if [[ -n "${WEIR_TANSU:-}" ]]; then
    [[ -x "$WEIR_TANSU" ]] || die "WEIR_TANSU=$WEIR_TANSU is not an executable"
    echo "$WEIR_TANSU"
  else
    echo "$cache/bin/tansu"
  fi
}

install() {
  local bin
  bin=$(binary)
  if [[ -x "$bin" ]] && "$bin" --version 2>/dev/null | grep -q "tansu $version"; then
    echo "$bin"
    return
  fi
  [[ -z "${WEIR_TANSU:-}" ]] || die "WEIR_TANSU=$WEIR_TANSU is not tansu $version"
  echo "tansu.sh: building tansu $version into $cache (once; 20-45 minutes on 2 cores)" >&2
  mkdir -p "$cache"
  CARGO_TARGET_DIR="$cache/target" cargo install "tansu@$version" --locked \
    --features dynostore,libsql --root "$cache" >&2
  rm -rf "$cache/target" # 1.5 GB of build files; the binary is all we keep
  echo "$bin"
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local dir=${1:?usage: tansu.sh start DIR [PORT]} port=${2:-} bin pid
  bin=$(install)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f "$dir/tansu.pid" ]] && kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
    die "a broker already runs from $dir (PID $(cat "$dir/tansu.pid")); stop it first"
  fi
  if [[ -z "$port" ]]; then
    port=${WEIR_TANSU_PORT:-19092}
    while listening "$port"; do port=$((port + 1)); done
  elif listening "$port"; then
    die "port $port on 127.0.0.1 is taken; pick another"
  fi
  # Tansu reads the path of a sqlite:// URL as relative to its working directory.
  (cd "$dir" && exec nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "${WEIR_TANSU_STORAGE:-sqlite://tansu.db}" \
    >>"$dir/tansu.log" 2>&1) &
  pid=$!
  echo "$pid" >"$dir/tansu.pid"
  echo "$port" >"$dir/tansu.port"
  for _ in $(seq 1 100); do
    if listening "$port"; then
      echo "127.0.0.1:$port"
      return
    fi
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/tansu.log" >&2; die "tansu exited at start"; }
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  die "tansu did not listen on 127.0.0.1:$port within 10 s (log: $dir/tansu.log)"
}

stop() {
  local dir=${1:?usage: tansu.sh stop DIR} pid
  [[ -f "$dir/tansu.pid" ]] || die "no broker was started from $dir"
  pid=$(cat "$dir/tansu.pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/tansu.pid"
}

topic() {
  local dir=${1:?usage: tansu.sh topic DIR NAME [PARTITIONS]} name=${2:?topic name} partitions=${3:-3}
  [[ -f "$dir/tansu.port" ]] || die "no broker was started from $dir"
  "$(binary)" topic create --broker "tcp://127.0.0.1:$(cat "$dir/tansu.port")" \
    --partitions "$partitions" "$name" >/dev/null
}

cmd=${1:-}
shift || true
case "$cmd" in
  install) install ;;
  binary) binary ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  topic) topic "$@" ;;
  *) die "usage: tansu.sh install | binary | start DIR [PORT] | stop DIR | topic DIR NAME [PARTITIONS]" ;;
esac
