#!/usr/bin/env bash
# Runs the operator against a local control plane with a demo tenant and SQLite mailboxes, prints
# how to use it, and stops everything it started when interrupted.
#
# Environment: CLEANMAIL_DEMO_SCIM_PORT (8080), CLEANMAIL_DEMO_METRICS_PORT (9090),
# CLEANMAIL_DEMO_API_PORT (6443), CLEANMAIL_DEMO_DOMAIN (contoso.example), CLEANMAIL_DEMO_DIR (a new temp dir).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
scim_port="${CLEANMAIL_DEMO_SCIM_PORT:-8080}"
metrics_port="${CLEANMAIL_DEMO_METRICS_PORT:-9090}"
api_port="${CLEANMAIL_DEMO_API_PORT:-6443}"
domain="${CLEANMAIL_DEMO_DOMAIN:-contoso.example}"
dir="${CLEANMAIL_DEMO_DIR:-$(mktemp -d /tmp/cleanmail-demo.XXXXXX)}"
mkdir -p "$dir"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$scim_port" "$metrics_port" "$api_port"; do
    if port_busy "$port"; then
        echo "demo: port $port on 127.0.0.1 is already in use (another demo running?)." >&2
        echo "demo: choose other ports with CLEANMAIL_DEMO_SCIM_PORT, CLEANMAIL_DEMO_METRICS_PORT, CLEANMAIL_DEMO_API_PORT." >&2
        exit 1
    fi
done

plane_pid="" operator_pid=""
stop() {
    trap - EXIT INT TERM
    [[ -n "$operator_pid" ]] && kill -TERM "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null
    [[ -n "$plane_pid" ]] && kill -TERM "$plane_pid" 2>/dev/null && wait "$plane_pid" 2>/dev/null
    echo "demo: stopped (state kept in $dir)" >&2
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "demo: starting kube-apiserver and etcd on 127.0.0.1:$api_port (logs in $dir)" >&2
bash "$repo/tools/controlplane/run.sh" --dir "$dir/controlplane" --port "$api_port" --owner-pid $$ >"$dir/controlplane.log" 2>&1 &
plane_pid=$!
while [[ ! -f "$dir/controlplane/ready" ]]; do
    if ! kill -0 "$plane_pid" 2>/dev/null; then
        cat "$dir/controlplane.log" >&2
        exit 1
    fi
    sleep 0.5
done
export KUBECONFIG="$dir/controlplane/kubeconfig"
kubectl="$(bash "$repo/tools/controlplane/build.sh")/kubectl"

bash "$repo/tools/controlplane/install-crds.sh" "$KUBECONFIG" "$repo/crds" >/dev/null
token="$(head -c 32 /dev/urandom | base64 | tr -d '/+=' | head -c 40)"
"$kubectl" create namespace demo >/dev/null
"$kubectl" -n demo create secret generic scim-token --from-literal=token="$token" >/dev/null
"$kubectl" apply -f - >/dev/null <<YAML
apiVersion: cleanmail.ch/v1alpha1
kind: CleanmailTenant
metadata: {name: demo, namespace: demo}
spec:
  tokenSecretRef: {name: scim-token}
  domains: [$domain]
  deletionPolicy: Delete
YAML

"${CARGO_TARGET_DIR:-$repo/target}/debug/cleanmail-operator" run \
    --scim-addr "127.0.0.1:$scim_port" --metrics-addr "127.0.0.1:$metrics_port" \
    --default-backend "sqlite://$dir/mailboxes.db" --instance demo >"$dir/operator.log" 2>&1 &
operator_pid=$!
until curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$operator_pid" 2>/dev/null; then
        cat "$dir/operator.log" >&2
        exit 1
    fi
    sleep 0.5
done

scim_url="http://127.0.0.1:$scim_port/api/v3/scim2"
cat <<TEXT

cleanmail-operator is running. Paste the first two lines into Entra's provisioning page
(Tenant URL, Secret Token); users must be in the domain of the third.

SCIM_URL=$scim_url
SCIM_TOKEN=$token
SCIM_DOMAIN=$domain
KUBECONFIG=$KUBECONFIG

Try it:
  curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/scim+json' \\
       -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@$domain","active":true}' \\
       $scim_url/Users
  $kubectl --kubeconfig $KUBECONFIG get cleanmailusers -A
  sqlite3 $dir/mailboxes.db 'SELECT address, active FROM mailboxes'

Operator log: $dir/operator.log. Press Ctrl-C to stop.
TEXT
wait "$operator_pid"
