#!/usr/bin/env bash
# The README walkthrough, end to end, against a gateway on 127.0.0.1:4200 started with
# `cargo run --release -p tollgate -- serve`. Needs curl and python3.
set -euo pipefail
URL=${URL:-http://127.0.0.1:4200}
DATA=${DATA:-./tollgate-data}
ADMIN=${TOLLGATE_ADMIN_TOKEN:-$(cat "$DATA/admin.token")}
TENANT=${TENANT:-quickstart-$RANDOM}

echo "== create tenant $TENANT on the demo provider"
created=$(curl -sf -X POST "$URL/api/v1/tenants" -H "Authorization: Bearer $ADMIN" \
  -d "{\"tenant_id\":\"$TENANT\",\"provider\":\"demo\",\"api_key\":\"unused\",\"model\":\"demo-small\",\"budget_usd_per_month\":1}")
TOKEN=$(printf '%s' "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

echo "== chat"
curl -sf "$URL/v1/chat/completions" -H "Authorization: Bearer $TOKEN" \
  -d '{"model":"default","messages":[{"role":"user","content":"Hello"}]}'
echo

echo "== stream"
curl -sfN "$URL/v1/chat/completions" -H "Authorization: Bearer $TOKEN" \
  -d '{"model":"default","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}'

echo "== usage this month"
curl -sf "$URL/api/v1/metering/tenant/$TENANT?start=$(date -u +%Y-%m-01)&end=$(date -u +%Y-%m-%d)" \
  -H "Authorization: Bearer $ADMIN"
echo
