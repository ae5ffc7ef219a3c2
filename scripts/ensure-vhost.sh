#!/usr/bin/env bash
# Creates the RabbitMQ vhost named by the environment's amqp_url (and gives its
# user every permission there). Each environment has its own vhost: nothing
# made for one is consumed by another. Idempotent.
#
# A broker on this machine is set up with rabbitmqctl. Any broker, remote
# ones included, through its management API when RABBITMQ_MANAGEMENT_URL names
# it with an administrator's credentials:
#   RABBITMQ_MANAGEMENT_URL=http://admin:secret@rabbit.internal:15672 scripts/ensure-vhost.sh production
# (the user of amqp_url must exist: `rabbitmqctl add_user`, docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
env_name="${1:-development}"
read -r host vhost user < <(.venv/bin/python - "$env_name" <<'PY'
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from common.config import DEFAULT_CONFIG_DIR, load
from common.errors import ConfigError

config_dir = Path(os.environ.get("IMAGE_SERVER_CONFIG_DIR", DEFAULT_CONFIG_DIR))
try:
    url = urlsplit(load(sys.argv[1], config_dir).amqp_url)
except ConfigError as exc:
    sys.exit(f"configuration error: {exc.message}")
print(url.hostname or "127.0.0.1", unquote(url.path[1:]) or "/", url.username or "guest")
PY
)
if [ -n "${RABBITMQ_MANAGEMENT_URL:-}" ]; then
  .venv/bin/python - "$RABBITMQ_MANAGEMENT_URL" "$vhost" "$user" <<'PY'
import base64
import json
import sys
import urllib.request
from urllib.parse import quote, urlsplit

api, vhost, user = sys.argv[1:]
parts = urlsplit(api)
base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()


def put(path: str, body: dict[str, str]) -> None:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="PUT",
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except OSError as exc:
        sys.exit(f"RabbitMQ management API at {base}: {exc}")


put(f"/vhosts/{quote(vhost, safe='')}", {})
put(f"/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
    {"configure": ".*", "write": ".*", "read": ".*"})
PY
  echo "RabbitMQ vhost '$vhost' ready for $user (management API)"
  exit 0
fi
case "$host" in
  127.0.0.1 | localhost | ::1) ;;
  *) echo "RabbitMQ is on $host: run with RABBITMQ_MANAGEMENT_URL=http://<admin>:<password>@$host:15672 to create vhost '$vhost' there"; exit 0 ;;
esac
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" rabbitmqctl -q add_vhost "$vhost" 2>/dev/null || true
"${sudo_cmd[@]}" rabbitmqctl -q set_permissions -p "$vhost" "$user" ".*" ".*" ".*"
echo "RabbitMQ vhost '$vhost' ready for $user"
