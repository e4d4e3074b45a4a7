#!/usr/bin/env bash
# Runs a benchmark peer SCIM server in the foreground, bound to 127.0.0.1:PORT. The script execs the
# server, so its pid is the server's process (for CPU and RSS readings in /proc/PID).
#
#   run-peer.sh scim2-server PORT
#     base URL: http://127.0.0.1:PORT/v2        (scim2-server 0.8.3, PyPI; "/v2" is optional there)
#     auth:     Authorization: Bearer bench-token (anything else gets 401)
#   run-peer.sh scimmy PORT
#     base URL: http://127.0.0.1:PORT/scim/v2   (scimmy 1.3.5 + scimmy-routers 1.3.2 + express 4, npm)
#     auth:     Authorization: Bearer bench-token (anything else gets 401)
#
# The token can be changed with BENCH_TOKEN. Install the peers first with install-peers.sh.
set -euo pipefail

usage() { echo "usage: $0 scim2-server|scimmy PORT" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
name="$1"
port="$2"
[[ "$port" =~ ^[0-9]+$ ]] || usage
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/bench"
token="${BENCH_TOKEN:-bench-token}"

case "$name" in
  scim2-server)
    bin="$cache/venv/bin/scim2-server"
    [[ -x "$bin" ]] || { echo "run-peer: $bin missing; run $here/install-peers.sh" >&2; exit 1; }
    exec "$bin" --hostname 127.0.0.1 --port "$port" --bearer-token "$token"
    ;;
  scimmy)
    app="$cache/scimmy"
    [[ -d "$app/node_modules/scimmy-routers" ]] || { echo "run-peer: $app not installed; run $here/install-peers.sh" >&2; exit 1; }
    # Keep the installed copy in step with the checkout's server.js.
    cmp -s "$here/peers/scimmy/server.js" "$app/server.js" || cp "$here/peers/scimmy/server.js" "$app/server.js"
    cd "$app"
    exec node server.js --host 127.0.0.1 --port "$port" --token "$token"
    ;;
  *) usage ;;
esac
