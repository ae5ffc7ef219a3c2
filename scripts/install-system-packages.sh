#!/usr/bin/env bash
# Installs what the project needs from the distribution's packages, only when
# it is missing: python3-venv; with the argument `rabbitmq`, RabbitMQ (an
# application host of a production deploy has none: its broker is elsewhere);
# with the argument `test`, also ImageMagick (the tests compare our geometry with the original service's
# ImageMagick recipe), headless Chromium (the status page is loaded in it),
# wrk (load during the rolling-restart test), Prometheus (its promtool checks
# the alert rules) and HAProxy (the example front is run in front of a stack).
# Idempotent.
set -euo pipefail

missing=()
python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3-venv)
for wanted in "$@"; do
  case "$wanted" in
    rabbitmq|test) ;;
    *) echo "install-system-packages.sh: unknown argument $wanted (rabbitmq, test)" >&2; exit 2 ;;
  esac
done
if [[ " $* " == *" rabbitmq "* ]]; then
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
fi
if [[ " $* " == *" test "* ]]; then
  # `convert -version` names ImageMagick only when it is the real one.
  convert -version 2>/dev/null | grep -q ImageMagick || missing+=(imagemagick)
  command -v chromium-headless-shell >/dev/null 2>&1 || missing+=(chromium-headless-shell)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)  # the README's commands, as typed
  # The container tests: Podman (runc: crun fails on this kind of machine's cgroups)
  # and mmdebstrap (the Debian base image, built here: no registry is reachable).
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # checks deploy/alerts.yml
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)  # deploy/examples/haproxy.cfg
fi

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ " $* " == *" test "* ]] && [ ! -e /etc/containers/containers.conf ]; then
  # Podman's defaults on this kind of machine: runc, and ulimits no higher than the
  # host's (podman's own nofile and nproc are refused). Written once; never replaced.
  "${sudo_cmd[@]}" mkdir -p /etc/containers
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [ "$nofile" = unlimited ] && nofile=1048576
  [ "$nproc" = unlimited ] && nproc=4096
  [ "$nproc" -gt 4096 ] && nproc=4096
  printf '%s\n' "# Written by image-server's scripts/install-system-packages.sh." \
    '[containers]' "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]" \
    '[engine]' 'runtime = "runc"' | "${sudo_cmd[@]}" tee /etc/containers/containers.conf >/dev/null
fi
