#!/usr/bin/env bash
# `make loadtest`: start a local server and run every scenario's full profile against it,
# one report per scenario under reports/<scenario>/. Exit code: the worst of the scenarios
# (0 pass, 1 SLO missed, 2 inconclusive, 3 bad configuration).
set -uo pipefail
cd "$(dirname "$0")/.."
PORT="${LOADTEST_PORT:-18190}"
SECRET="loadtest-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SCENARIOS="${SCENARIOS:-join events chat flashsale groupbuy mirror media mixed}"
DATA="$(mktemp -d)"
.venv/bin/souk serve --host 127.0.0.1 --port "$PORT" --secret "$SECRET" --data-dir "$DATA" \
  --log-level warning > reports-server.log 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
worst=0
for s in $SCENARIOS; do
  echo "=== $s"
  .venv/bin/souk-loadtest "$s" --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" \
    --profile full --workers "${WORKERS:-2}" --report "reports/$s" --no-live
  rc=$?
  [ $rc -gt $worst ] && worst=$rc
done
exit $worst
