#!/bin/sh
# The broker's first start makes the one user and vhost of the environment
# (RabbitMQ's default_user/default_vhost: guest is then never created).
set -eu
password="${RABBITMQ_PASSWORD:-}"
if [ -n "${RABBITMQ_PASSWORD_FILE:-}" ]; then
  password="$(cat "$RABBITMQ_PASSWORD_FILE")"
fi
: "${RABBITMQ_USER:?set RABBITMQ_USER}" "${RABBITMQ_VHOST:?set RABBITMQ_VHOST}"
[ -n "$password" ] || { echo "set RABBITMQ_PASSWORD or RABBITMQ_PASSWORD_FILE" >&2; exit 2; }
umask 077
cat > /etc/rabbitmq/conf.d/10-defaults.conf <<CONF
default_user = $RABBITMQ_USER
default_pass = $password
default_vhost = $RABBITMQ_VHOST
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
default_user_tags.monitoring = true
CONF
exec rabbitmq-server
