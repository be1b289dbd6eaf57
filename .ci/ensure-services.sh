#!/usr/bin/env bash
# Make sure what the test suite talks to is installed and answering: Redis, PostgreSQL and
# Debian's Chromium, with the Chinese and emoji fonts the pages' screenshots need (so they show
# what people see, not boxes). Installs with apt when missing, starts what is not running, and
# fails loudly (never skips) when something cannot be brought up.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
for font in fonts-noto-cjk fonts-noto-color-emoji; do
  dpkg-query -W -f='${Status}' "$font" 2>/dev/null | grep -q "install ok installed" || missing+=("$font")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-services: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "ensure-services: starting redis"
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "ensure-services: starting postgresql"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi

for _ in $(seq 1 60); do
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    echo "ensure-services: redis, postgresql, chromium and the CJK/emoji fonts are ready"
    exit 0
  fi
  sleep 0.5
done
echo "ensure-services: redis or postgresql is not answering on 127.0.0.1" >&2
exit 1
