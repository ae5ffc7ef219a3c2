#!/usr/bin/env bash
# What the benchmark needs besides the project: nginx and wrk from the
# distribution's packages, thumbor from PyPI in a venv of its own. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if ((${#missing[@]})); then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -x .thumbor-venv/bin/thumbor ]; then
  python3 -m venv .thumbor-venv
  .thumbor-venv/bin/pip install -q "thumbor==7.8.0"
fi
# The production-like rows store thumbor's originals and results in S3 (bench/run.py).
if [ ! -d .thumbor-venv/lib/python3*/site-packages/thumbor_aws ]; then
  .thumbor-venv/bin/pip install -q "thumbor-aws==1.1.0"
fi
# py-spy samples our programs during a cold run (bench/profiles.py).
[ -x ../.venv/bin/py-spy ] || ../.venv/bin/pip install -q "py-spy==0.4.3"
