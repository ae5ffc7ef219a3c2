#!/usr/bin/env bash
# Starts the local RabbitMQ (with the management console on 15672) unless it
# is already running, then waits until it accepts work. Idempotent.
set -euo pipefail
export PATH="$PATH:/usr/sbin"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

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
