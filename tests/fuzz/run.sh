#!/usr/bin/env bash
# Runs Tollgate's fuzz targets with cargo-fuzz (libFuzzer) on the stable toolchain.
#
#   tests/fuzz/run.sh short [TARGET...]   # ~20 s per target (CI); FUZZ_SECONDS overrides
#   tests/fuzz/run.sh long  [TARGET...]   # 10 min per target;    FUZZ_SECONDS overrides
#   tests/fuzz/run.sh build               # build only
#
# Installs cargo-fuzz if it is missing. `-s none` (no sanitizer) is what makes it work
# on stable: AddressSanitizer needs the unstable `-Zsanitizer`. Overflow checks and debug
# assertions stay on (cargo-fuzz's default), so arithmetic overflow is a crash.
#
# The corpus grows in tests/fuzz/corpus/TARGET (not committed), seeded from
# tests/fuzz/seeds/TARGET and, for policy_upload, from the stock policies the main build
# made. A crash leaves its input in tests/fuzz/artifacts/TARGET/ and fails the run;
# replay it from tests/fuzz with
#   cargo fuzz run -s none --codegen-units 16 TARGET artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-short}
shift || true
case "$mode" in
  short) seconds=${FUZZ_SECONDS:-20} ;;
  long) seconds=${FUZZ_SECONDS:-600} ;;
  build) seconds=0 ;;
  *) echo "usage: $0 short|long|build [TARGET...]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# `run` must get the same flags as `build`, or it rebuilds. 16 codegen units instead of
# cargo-fuzz's 1 halve the cold build (wasmtime and Cranelift) on a 2-core machine.
flags=(-s none --codegen-units 16)
# Build against the committed lock file (cargo fuzz has no --locked of its own).
cargo metadata --locked --format-version 1 >/dev/null
cargo fuzz build "${flags[@]}"
[ "$mode" = build ] && exit 0

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# The long run also mutates the real stock policies (when the main build has made them):
# each such input compiles for about a second, too slow for the short run, which fuzzes
# wasm-smith modules and components and raw bytes behind a component header instead.
if [ "$mode" = long ]; then
  mkdir -p corpus/policy_upload
  for wasm in ../../target/embedded-policies/wasm32-wasip2/release/tollgate_policy_default.wasm \
              ../../target/guests/wasm32-wasip2/release/tollgate_policy_*.wasm; do
    if [ -f "$wasm" ]; then cp -n "$wasm" corpus/policy_upload/ 2>/dev/null || true; fi
  done
fi

mkdir -p logs
summary=()
failed=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "seeds/$target" "artifacts/$target"
  args=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1)
  if [ -f "dict/$target.dict" ]; then args+=(-dict="dict/$target.dict"); fi
  # Real policies are large; elsewhere (and in the short run) inputs stay at 4096 bytes.
  if [ "$target" = policy_upload ]; then
    if [ "$mode" = long ]; then args+=(-max_len=1048576); else args+=(-max_len=4096); fi
  fi
  echo "== fuzzing $target for ${seconds}s"
  log="logs/$target.log"
  if cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- "${args[@]}" >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$target")
    tail -n 60 "$log"
  fi
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
  runs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\1/' <<<"$done_line")
  secs=$(sed -E 's/^Done ([0-9]+) runs in ([0-9]+) second.*/\2/' <<<"$done_line")
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2 || true)
  corpus=$(find "corpus/$target" -type f | wc -l)
  summary+=("$(printf '| %-18s | %-5s | %10s | %5s | %6s | %6s |' "$target" "$status" "${runs:--}" "${secs:--}" "${cov:--}" "$corpus")")
done

echo
echo "| target             | ok?   |  execs     | secs  | cov    | corpus |"
echo "|--------------------|-------|------------|-------|--------|--------|"
printf '%s\n' "${summary[@]}"
echo
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in tests/fuzz/artifacts/)" >&2
  exit 1
fi
