#!/usr/bin/env bash
# Starts the local RabbitMQ (with the management console on 15672) unless it
# is already running, then waits until it accepts work. Idempotent.
set -euo pipefail
export PATH="$PATH:/usr/sbin"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

# The broker setting the project relies on: quorum queues keep their write-ahead
# log in memory up to raft.wal_max_size_bytes (512 MiB by default), which is most
# of a busy node's growth; 64 MiB bounds it (docs/storage.md; bench/SOAK.md).
# Read when the node starts.
conf=/etc/rabbitmq/conf.d/50-image-server.conf
if [ ! -f "$conf" ]; then
  "${sudo_cmd[@]}" mkdir -p /etc/rabbitmq/conf.d
  echo "raft.wal_max_size_bytes = 67108864" | "${sudo_cmd[@]}" tee "$conf" >/dev/null
fi

if "${sudo_cmd[@]}" rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then
  exit 0
fi
"${sudo_cmd[@]}" rabbitmq-plugins -q enable --offline rabbitmq_management >/dev/null
if ! "${sudo_cmd[@]}" rabbitmqctl -q ping >/dev/null 2>&1; then
  echo "starting RabbitMQ"
  "${sudo_cmd[@]}" rabbitmq-server -detached
fi
for _ in $(seq 1 60); do
  if "${sudo_cmd[@]}" rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then
    echo "RabbitMQ is running (management console: http://127.0.0.1:15672/, guest/guest)"
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not start; see /var/log/rabbitmq/" >&2
exit 1
