#!/usr/bin/env bash
# Runs the native tests of the Python and JavaScript SDKs and of the policies written with
# them (no wasm involved): python -m unittest and node --test. Exits non-zero if any fails.
#
#   guest-sdk/test-native.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
failed=0

command -v python3 >/dev/null || { echo "error: python3 not found (apt-get install python3)" >&2; exit 1; }
command -v node >/dev/null || { echo "error: node not found (apt-get install nodejs npm)" >&2; exit 1; }

run() {
    echo "== $1"
    (cd "$2" && shift 2 && "$@") || failed=1
}

run "python sdk" "$root/guest-sdk/python" python3 -m unittest discover -s tests
for dir in "$root"/policies/python-*/; do
    run "policies/$(basename "$dir")" "$dir" env PYTHONPATH="$root/guest-sdk/python" python3 -m unittest discover -p 'test_*.py'
done

run "js sdk" "$root/guest-sdk/js" node --test test/
for dir in "$root"/policies/js-*/; do
    # The policy's dependencies are this SDK, as a `file:` link: no registry needed.
    [[ -d $dir/node_modules ]] || (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    run "policies/$(basename "$dir")" "$dir" node --test
done

exit $failed
