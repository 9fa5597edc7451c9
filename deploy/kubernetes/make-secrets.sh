#!/usr/bin/env bash
# Writes the Kubernetes overlays' secrets into deploy/kubernetes/overlays/single-site/secrets/
# (git-ignored): the same tokens, hashes and keys as the compose stack's make-secrets.sh (which
# this runs; among them the research install token, in gateway.env as
# FEDGATE_PIPELINE__RESEARCH__INSTALL_TOKEN and its SHA-256 in inference-research.env, the
# Secrets fedgate-gateway and fedgate-inference-research), the hub's YAML with the in-cluster site URL, and the site's index salt.
# --rotate-research-token replaces only the research install token (docs/deploy.md).
#   deploy/kubernetes/make-secrets.sh [--out DIR] [--rotate-research-token]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/overlays/single-site/secrets"
rotate=
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --rotate-research-token) rotate=$1; shift ;;
    *) echo "usage: make-secrets.sh [--out DIR] [--rotate-research-token]" >&2; exit 2 ;;
  esac
done
if [ -n "$rotate" ]; then
  # Nothing else changes (a new index salt would re-key every patient).
  exec "$here/../compose/make-secrets.sh" --out "$out" "$rotate"
fi
"$here/../compose/make-secrets.sh" --out "$out"
umask 077
# In the cluster: the gateway's Service, the hub's key in its Secret volume; site-b stands for a
# site elsewhere (its federated API's public URL).
sed -i -e 's#http://gateway:8080/#http://fedgate-gateway:8080/#' \
       -e 's#http://site-b:8080/#https://gw.site-b.example/#' \
       -e 's#/run/secrets/hub-signing-key#/etc/fedgate/hub-signing-key.pem#' "$out/hub.yaml"
# 32 random bytes, hexadecimal: the format gateway/index/keys.py keeps in data_dir/index-salt.
python3 -c 'import secrets; print(secrets.token_hex(32), end="")' >"$out/index-salt"
rm -f "$out/orthanc.env" "$out/site-b.env" "$out/viewer-token"
echo "make-secrets.sh: Kubernetes secrets in $out (kubectl apply -k overlays/single-site)"
