#!/usr/bin/env bash
# Writes the compose stack's secrets into deploy/compose/secrets/ (git-ignored, mode 0700):
# random tokens and passwords, the gateways' credential lists (with the token the gateway hands
# the inference service to read the series and store its results: pipeline.callback_token) (tokens stored as SHA-256 only,
# gateway/auth.py), the hub's Ed25519 signing key (PKCS#8 PEM, as `fedgate hub keygen` writes
# it) and the hub's YAML with the sites' tokens. Prints the tokens a person needs, once.
# Refuses to overwrite existing secrets (the sites trust the hub's key; Orthanc holds its token):
# remove secrets/ to start again. Needs python3 and openssl. --rotate-research-token replaces
# only the research install token (gateway.env, inference-research.env) in existing secrets.
#
#   deploy/compose/make-secrets.sh [--out DIR] [--rotate-research-token]
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/secrets"
rotate=
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --rotate-research-token) rotate=1; shift ;;
    *) echo "usage: make-secrets.sh [--out DIR] [--rotate-research-token]" >&2; exit 2 ;;
  esac
done
umask 077
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
sha256() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
research_install_env() { # token -> inference-research.env
  # The research inference service installs a model for the holder of this token only.
  printf 'FEDGATE_INFERENCE_ADMIN_TOKEN_SHA256=%s\n' "$(sha256 "$1")" >"$out/inference-research.env"
}

if [ -n "$rotate" ]; then
  if ! grep -q '^FEDGATE_PIPELINE__RESEARCH__INSTALL_TOKEN=' "$out/gateway.env" 2>/dev/null; then
    echo "make-secrets.sh: no research install token in $out/gateway.env to rotate" >&2
    exit 1
  fi
  research_install_token=$(token)   # URL-safe base64: no character sed would read
  sed -i "s#^FEDGATE_PIPELINE__RESEARCH__INSTALL_TOKEN=.*#FEDGATE_PIPELINE__RESEARCH__INSTALL_TOKEN=$research_install_token#" \
    "$out/gateway.env"
  research_install_env "$research_install_token"
  echo "make-secrets.sh: new research install token in $out (gateway.env, inference-research.env)"
  exit 0
fi

if [ -e "$out/gateway.env" ]; then
  echo "make-secrets.sh: $out already holds secrets; remove it to make new ones" >&2
  exit 1
fi
mkdir -p "$out"
client() { # name roles-json token -> one JSON object of auth.clients
  printf '{"name": "%s", "roles": %s, "token_sha256": "%s"}' "$1" "$2" "$(sha256 "$3")"
}

postgres_password=$(token)
orthanc_password=$(token)
admin_token=$(token)
forwarder_token=$(token)
viewer_token=$(token)
callback_token=$(token)
metrics_token=$(token)
hub_site_a_token=$(token)
hub_site_b_token=$(token)
site_b_admin_token=$(token)
analyst_token=$(token)
research_install_token=$(token)

printf %s "$postgres_password" >"$out/postgres-password"
printf %s "$viewer_token" >"$out/viewer-token"
printf %s "$metrics_token" >"$out/metrics-token"
database="postgresql://fedgate:${postgres_password}@postgres:5432/fedgate"

cat >"$out/orthanc.env" <<ENV
ORTHANC_FEDGATE_PASSWORD=$orthanc_password
FEDGATE_FORWARDER_TOKEN=$forwarder_token
ENV

cat >"$out/gateway.env" <<ENV
FEDGATE_AUTH__CLIENTS=[$(client admin '["admin"]' "$admin_token"), $(client orthanc '["forwarder"]' "$forwarder_token"), $(client ohif '["viewer"]' "$viewer_token"), $(client inference-service '["admin"]' "$callback_token"), $(client prometheus '["metrics"]' "$metrics_token"), $(client fedgate-hub '["hub", "query"]' "$hub_site_a_token")]
FEDGATE_PIPELINE__CALLBACK_TOKEN=$callback_token
FEDGATE_PACS__AUTH__PASSWORD=$orthanc_password
FEDGATE_QUEUE__URL=$database
FEDGATE_INDEX__URL=$database
FEDGATE_PIPELINE__RESEARCH__INSTALL_TOKEN=$research_install_token
ENV

research_install_env "$research_install_token"

cat >"$out/site-b.env" <<ENV
FEDGATE_AUTH__CLIENTS=[$(client admin '["admin"]' "$site_b_admin_token"), $(client fedgate-hub '["hub", "query"]' "$hub_site_b_token")]
ENV

openssl genpkey -algorithm ed25519 -out "$out/hub-signing-key.pem"
openssl pkey -in "$out/hub-signing-key.pem" -pubout -out "$out/hub-signing-key.pub"

cat >"$out/hub.yaml" <<YAML
# The hub of the compose file's "federation" profile (made by make-secrets.sh).
name: fedgate-hub
signing_key_file: /run/secrets/hub-signing-key
listen: {host: 0.0.0.0, port: 8090}
audit_log: /var/lib/fedgate/hub-audit.jsonl
auth:
  clients:
    - {name: analyst, person: analyst, roles: [query], token_sha256: "$(sha256 "$analyst_token")"}
sites:
  - {name: site-a, url: "http://gateway:8080/federated/v1", token: "$hub_site_a_token"}
  - {name: site-b, url: "http://site-b:8080/federated/v1", token: "$hub_site_b_token"}
YAML

# Compose (without swarm) bind-mounts a file secret with its owner and mode on this host, and
# the services read theirs as their own non-root users: the files compose.yaml names under
# `secrets:` are readable by all, inside a folder only its owner may enter (0700). The env
# files are read by compose itself and stay 0600.
chmod 0700 "$out"
chmod 0644 "$out/postgres-password" "$out/viewer-token" "$out/metrics-token" "$out/hub.yaml" \
  "$out/hub-signing-key.pem" "$out/hub-signing-key.pub"

cat <<TEXT
make-secrets.sh: wrote $out
  gateway admin token (http://localhost:8080):  $admin_token
  site-b admin token:                           $site_b_admin_token
  hub analyst token (http://localhost:8090):    $analyst_token
Keep them in a password manager; only their SHA-256 is in the gateways' settings.
TEXT
