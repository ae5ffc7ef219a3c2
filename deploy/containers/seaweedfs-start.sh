#!/bin/sh
# One S3 identity from the environment, then `weed server` in the foreground.
set -eu
secret="${S3_SECRET_KEY:-}"
if [ -n "${S3_SECRET_KEY_FILE:-}" ]; then
  secret="$(cat "$S3_SECRET_KEY_FILE")"
fi
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}"
[ -n "$secret" ] || { echo "set S3_SECRET_KEY or S3_SECRET_KEY_FILE" >&2; exit 2; }
umask 077
cat > /data/s3.json <<JSON
{"identities": [{"name": "image-server",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
exec weed server -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 \
  -s3 -s3.port=8333 -s3.config=/data/s3.json -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.volumeSizeLimitMB=64 -volume.max=0
