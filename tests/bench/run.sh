#!/usr/bin/env bash
# Tollgate side-by-side benchmark, one entry point: installs what it needs, builds the
# release binaries, then runs tests/bench/harness.py, which starts the mock upstream,
# nginx, LiteLLM's proxy and Tollgate on loopback, runs scenarios S1-S8, stops everything
# and writes the results.
#
#   tests/bench/run.sh              full run -> tests/bench/RESULTS.md (+ results.json), < 20 min
#   QUICK=1 tests/bench/run.sh      smoke run (~3 min) -> target/bench/RESULTS-quick.md
#   ONLY=S1,S4 tests/bench/run.sh   some scenarios only -> tests/bench/RESULTS-S1-S4.md
#   ONLY=S9 tests/bench/run.sh      the PostgreSQL profile (1 and 3 replicas) -> RESULTS-S9.md
#   ONLY=S10 tests/bench/run.sh     the inbound APIs side by side -> RESULTS-S10.md
#   WAIT_IDLE=1 ...                 wait (up to 30 min) until no other cargo/rustc runs
#
# Installs: nginx-light, wrk and postgresql (apt-get), oha (cargo install --locked), a Python venv in
# target/bench/venv with litellm[proxy] (pip). Traffic goes to 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OHA_VERSION=1.16.0
LITELLM_VERSION=1.79.1
BENCH_DIR=$ROOT/target/bench
started=$(date +%s)
say() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
mkdir -p "$BENCH_DIR"

# --- tools ---------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)  # S9
if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if ! "$OHA" --version 2>/dev/null | grep -q "$OHA_VERSION"; then
    say "cargo install oha $OHA_VERSION (one-off, a few minutes)"
    cargo install oha --version "$OHA_VERSION" --locked
    OHA=$HOME/.cargo/bin/oha
fi

VENV=$BENCH_DIR/venv
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" 2>/dev/null; then
    say "pip install litellm[proxy]==$LITELLM_VERSION into $VENV"
    python3 -m venv "$VENV"
    # A failure here is recorded in the results (LiteLLM column missing), not fatal.
    "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" || say "LiteLLM install failed; continuing without it"
fi

# --- builds ----------------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$'; then
    say "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
fi
say "cargo build --release (tollgate, mock-upstream, floor-proxy) and the policy_call bench"
cargo build --release -p tollgate --bin tollgate -p tollgate-tests --bin mock-upstream --bin floor-proxy
cargo bench -p tollgate-tests --bench policy_call --no-run

# --- a quiet machine -------------------------------------------------------------------
busy() { pgrep -x 'cargo|rustc' >/dev/null 2>&1; }
if busy; then
    if [[ "${WAIT_IDLE:-0}" == 1 ]]; then
        say "waiting for other cargo/rustc processes to finish"
        for _ in $(seq 1 360); do busy || break; sleep 5; done
    fi
    busy && say "warning: other cargo/rustc processes are running; figures will be noisy (recorded in the results)"
fi

# --- run -------------------------------------------------------------------------------
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [[ "${QUICK:-0}" == 1 ]]; then
    profile=quick out=$BENCH_DIR/RESULTS-quick.md json=$BENCH_DIR/results-quick.json command="QUICK=1 tests/bench/run.sh"
else
    profile=full out=$ROOT/tests/bench/RESULTS.md json=$ROOT/tests/bench/results.json command="tests/bench/run.sh"
    # Some scenarios only: their own file, so the full run's stays whole.
    if [[ -n "${ONLY:-}" ]]; then
        out=$ROOT/tests/bench/RESULTS-${ONLY//,/-}.md json=$ROOT/tests/bench/results-${ONLY//,/-}.json
    fi
fi
[[ -n "${ONLY:-}" ]] && command="ONLY=$ONLY $command"
python3 tests/bench/harness.py --profile "$profile" --out "$out" --json-out "$json" \
    --oha "$OHA" --litellm "$VENV/bin/litellm" --only "${ONLY:-}" --command "$command"
say "done in $(( ($(date +%s) - started) / 60 )) min $(( ($(date +%s) - started) % 60 )) s: $out"
