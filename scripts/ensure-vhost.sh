#!/usr/bin/env bash
# Creates the RabbitMQ vhost named by config/<env>.json's amqp_url (and gives
# its user every permission there) when the broker is this machine's. Each
# environment has its own vhost: nothing made for one is consumed by another.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
env_name="${1:-development}"
read -r host vhost user < <(.venv/bin/python - "$env_name" <<'PY'
import sys
from urllib.parse import unquote, urlsplit

from common.config import load

url = urlsplit(load(sys.argv[1]).amqp_url)
print(url.hostname or "127.0.0.1", unquote(url.path[1:]) or "/", url.username or "guest")
PY
)
case "$host" in
  127.0.0.1 | localhost | ::1) ;;
  *) echo "RabbitMQ is on $host: create vhost '$vhost' there"; exit 0 ;;
esac
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" rabbitmqctl -q add_vhost "$vhost" 2>/dev/null || true
"${sudo_cmd[@]}" rabbitmqctl -q set_permissions -p "$vhost" "$user" ".*" ".*" ".*"
echo "RabbitMQ vhost '$vhost' ready for $user"
