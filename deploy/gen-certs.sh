#!/usr/bin/env bash
# Write a CA and a serving certificate for kitpin's webhook Service into deploy/certs/
# (ca.crt, tls.crt, tls.key), for `kubectl apply -k deploy/`. kustomize turns them into the
# Secret kitpin-tls and copies ca.crt into the webhook configurations' caBundle.
#
#   deploy/gen-certs.sh [--namespace kitpin] [--service kitpin] [--days 3650] [--out DIR] [--force]
#
# The CA key is not kept: to rotate, run again with --force and re-apply. Needs openssl.
set -euo pipefail

namespace=kitpin
service=kitpin
days=3650
out="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/certs"
force=false
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace="$2"; shift 2 ;;
    --service) service="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --force) force=true; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "gen-certs.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v openssl >/dev/null || { echo "gen-certs.sh: openssl not found" >&2; exit 1; }
mkdir -p "$out"
if [ -e "$out/tls.crt" ] && [ "$force" != true ]; then
  echo "gen-certs.sh: $out/tls.crt exists; use --force to replace it" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

openssl req -x509 -new -nodes -days "$days" \
  -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$work/ca.key" -out "$work/ca.crt" -subj "/CN=${service}-ca" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -new -nodes \
  -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -keyout "$work/tls.key" -out "$work/tls.csr" -subj "/CN=${service}.${namespace}.svc" 2>/dev/null

cat > "$work/ext.cnf" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:${service},DNS:${service}.${namespace},DNS:${service}.${namespace}.svc,DNS:${service}.${namespace}.svc.cluster.local
EXT
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
  -CAcreateserial -days "$days" -extfile "$work/ext.cnf" -out "$work/tls.crt" 2>/dev/null

install -m 0644 "$work/ca.crt" "$out/ca.crt"
install -m 0644 "$work/tls.crt" "$out/tls.crt"
install -m 0600 "$work/tls.key" "$out/tls.key"
echo "wrote $out/{ca.crt,tls.crt,tls.key} for ${service}.${namespace}.svc"
