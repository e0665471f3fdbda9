# Shared by the benchmark scripts (sourced, not run): builds the release binary, sets $weir, and
# prints the machine line. bench_data EVENTS makes (once) and prints the generated JSON folder.
# WEIR_BIN=path uses that binary instead (an A/B run of two builds; a debug build's times say
# nothing about speed).
target=${CARGO_TARGET_DIR:-target}
if [[ -n ${WEIR_BIN:-} ]]; then
  weir=$WEIR_BIN
else
  cargo build --release -p weir-cli --quiet
  weir="$target/release/weir"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"

bench_data() {
  local data="benches/data/events-$1"
  if [[ ! -d $data ]]; then
    "$weir" generate --out "$data" --events "$1" --files 20 >&2
  fi
  echo "$data"
}
