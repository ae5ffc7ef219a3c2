#!/usr/bin/env bash
# Builds the images compose.yaml and deploy/kubernetes/ run, with Podman and no
# registry: a Debian bookworm base made here once (mmdebstrap, Debian's own
# packages, tagged as docker.io/library/debian:bookworm-slim so that each
# `FROM debian:bookworm-slim` finds it), then the service, RabbitMQ and SeaweedFS.
#   scripts/build-images.sh            # all three
#   scripts/build-images.sh service    # the service's alone
set -euo pipefail
cd "$(dirname "$0")/.."

base=docker.io/library/debian:bookworm-slim
if ! podman image exists "$base"; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # merged-usr: /usr merged by the hook, not by the usrmerge package (and the perl it needs).
  mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    bookworm "$work/rootfs.tar"
  podman import --quiet "$work/rootfs.tar" "$base" >/dev/null
fi

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# pip in the builds trusts what pip trusts here (a TLS proxy's CA, say): the
# bundle is mounted for the build steps only, never copied into an image.
ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
build() {  # name, Containerfile
  podman build --quiet --pull=never --format docker --network host \
    --volume "$ca:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt \
    --build-arg VERSION="$version" --build-arg COMMIT="$commit" \
    --tag "localhost/$1:latest" --file "$2" . >/dev/null
  echo "built localhost/$1:latest"
}
for wanted in "${@:-service rabbitmq seaweedfs}"; do
  for name in $wanted; do
    case "$name" in
      service) build image-server Containerfile ;;
      rabbitmq) build image-server-rabbitmq deploy/containers/rabbitmq.Containerfile ;;
      seaweedfs) build image-server-seaweedfs deploy/containers/seaweedfs.Containerfile ;;
      *) echo "build-images.sh: no image $name (service, rabbitmq, seaweedfs)" >&2; exit 2 ;;
    esac
  done
done
