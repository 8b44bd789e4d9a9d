#!/usr/bin/env bash
# Builds the Python policy in DIR (a module `policy.py` with `route`, and optionally
# `on_complete`) into a Tollgate policy component: DIR/policy.wasm, or OUT if given.
#
#   guest-sdk/python/build.sh DIR [OUT]
#
# Installs the pinned componentize-py into target/py-componentize on first use (PyPI);
# later runs reuse it. Needs python3 with the venv module.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

usage() { echo "usage: $0 DIR [OUT]   (DIR holds policy.py; OUT defaults to DIR/policy.wasm)" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
dir=$(cd "$1" && pwd) || usage
out=${2:-$dir/policy.wasm}
[[ -f $dir/policy.py ]] || { echo "error: $dir has no policy.py (the module that defines route)" >&2; exit 2; }

sdk=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$sdk/../.." && pwd)
venv=$root/target/py-componentize
marker=$venv/installed-componentize-py-$COMPONENTIZE_PY_VERSION

if [[ ! -f $marker ]]; then
    if ! command -v python3 >/dev/null; then
        echo "error: python3 not found; building a Python policy needs Python 3.10 or later with venv" >&2
        echo "       (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    python3 -m venv "$venv" || { echo "error: python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
    # Written once pip succeeded: an install cut short is done again.
    touch "$marker"
fi

# The component's entry module: the class componentize-py exports, wrapping DIR's policy.
app=$(mktemp -d)
trap 'rm -rf "$app"' EXIT
cat > "$app/tollgate_policy_app.py" <<'PY'
import policy
from tollgate_policy._component import export

WitWorld = export(policy.route, getattr(policy, "on_complete", None))
PY

# --stub-wasi: the component imports only tollgate:policy (the gateway refuses
# wasi:sockets, which CPython's runtime links); a WASI call (print, time.time) traps.
mkdir -p "$(dirname "$out")"
"$venv/bin/componentize-py" --quiet -d "$root/wit" -w policy componentize --stub-wasi \
    -p "$dir" -p "$sdk" -p "$app" -o "$out" tollgate_policy_app
echo "built $out ($(wc -c < "$out") bytes)"
