#!/bin/bash
# Readiness/startup check for TF Serving: succeed only when every model named in
# $READY_MODELS has a version in state AVAILABLE.
#
# Why an exec probe: TF Serving answers `GET /v1/models/<name>` with HTTP 200 while a
# version is still START or LOADING, so an httpGet probe (status code only) would send
# traffic to a replica that cannot predict yet. It implements no grpc.health.v1 service,
# so a `grpc:` probe fails forever. The official image has bash and grep but no curl, so
# the request goes through bash's /dev/tcp. The probe's timeoutSeconds bounds the read.
set -u
host="${READY_HOST:-127.0.0.1}"
port="${READY_PORT:-8501}"
for model in ${READY_MODELS:-mnist}; do
  exec 3<>"/dev/tcp/${host}/${port}" || exit 1
  printf 'GET /v1/models/%s HTTP/1.0\r\nHost: %s\r\n\r\n' "${model}" "${host}" >&3
  body="$(cat <&3)"
  exec 3<&-
  case "${body}" in
    "HTTP/1."[01]" 200"*) ;;
    *) echo "model ${model}: status request failed: ${body%%$'\r'*}"; exit 1 ;;
  esac
  if ! grep -Eq '"state"[[:space:]]*:[[:space:]]*"AVAILABLE"' <<<"${body}"; then
    echo "model ${model}: no AVAILABLE version yet"
    exit 1
  fi
done
