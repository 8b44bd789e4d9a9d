#!/usr/bin/env bash
# Builds the JavaScript policy in DIR (an ES module `policy.js` exporting `route`, and
# optionally `onComplete`) into a Tollgate policy component: DIR/policy.wasm, or OUT.
#
#   guest-sdk/js/build.sh DIR [OUT]
#
# Installs the pinned jco and componentize-js (toolchain/package-lock.json) into
# target/js-toolchain on first use (npm); later runs reuse them. Needs Node.js 20.19+ and npm.
set -euo pipefail

usage() { echo "usage: $0 DIR [OUT]   (DIR holds policy.js; OUT defaults to DIR/policy.wasm)" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
dir=$(cd "$1" && pwd) || usage
out=${2:-$dir/policy.wasm}
[[ -f $dir/policy.js ]] || { echo "error: $dir has no policy.js (the module that exports route)" >&2; exit 2; }

sdk=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$sdk/../.." && pwd)
tools=$root/target/js-toolchain

for tool in node npm; do
    if ! command -v $tool >/dev/null; then
        echo "error: $tool not found; building a JavaScript policy needs Node.js 20.19 or later with npm" >&2
        echo "       (Debian/Ubuntu: apt-get install nodejs npm)" >&2
        exit 1
    fi
done

# jco bundles with rolldown, which needs Node.js 20.19+ (or 22.12+).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1)'; then
    echo "error: node $(node --version) is too old; building a JavaScript policy needs Node.js 20.19 or later (or 22.12+)" >&2
    exit 1
fi

# The lock file is the pin: reinstall whenever it differs from the installed one.
if ! cmp -s "$sdk/toolchain/package-lock.json" "$tools/package-lock.json" || [[ ! -x $tools/node_modules/.bin/jco ]]; then
    mkdir -p "$tools"
    cp "$sdk/toolchain/package.json" "$sdk/toolchain/package-lock.json" "$tools/"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The policy's own dependencies (at least this SDK, as a `file:` link).
if [[ -f $dir/package.json && ! -d $dir/node_modules ]]; then
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
fi

# The component's entry module: the world's exports, wrapping DIR's policy.
entry=$dir/.tollgate-entry.js
trap 'rm -f "$entry"' EXIT
cat > "$entry" <<JS
import * as policy from "./policy.js";
import { exportPolicy } from "$sdk/src/component.js";

const exported = exportPolicy(policy);
export function route(request, context) {
  return exported.route(request, context);
}
export function onComplete(completion, context) {
  exported.onComplete(completion, context);
}
JS

# --disable all: the component imports only tollgate:policy (no WASI at all); an uncaught
# error traps after component.js logged it to the tenant's policy log.
# jco reads the WIT through a sandbox that sees only its working directory: run it from
# the repository root with relative paths.
mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
(cd "$root" && "$tools/node_modules/.bin/jco" componentize "$(realpath --relative-to=. "$entry")" --bundle \
    --bundle-config "$(realpath --relative-to=. "$sdk/bundle.config.mjs")" --wit wit/policy.wit --world-name policy --disable all -o "$out" >/dev/null)
echo "built $out ($(wc -c < "$out") bytes)"
