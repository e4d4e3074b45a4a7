#!/usr/bin/env bash
# Installs the benchmark peers outside the checkout, under $CACHE/bench/:
#   venv/    a Python venv with scim2-server (pins in peers/requirements.txt)
#   scimmy/  package.json, package-lock.json and server.js of peers/scimmy, with node_modules (npm ci)
# Idempotent: each part carries a stamp (hash of its inputs and of the interpreter version) and is
# rebuilt only when that changes. CACHE defaults to ${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}.
# Needs python3 (>= 3.11) and Node.js (>= 18) with npm; reaches PyPI and the npm registry.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peers="$here/peers"
cache="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/bench"
python="${PYTHON:-python3}"
mkdir -p "$cache"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- scim2-server (PyPI) ---
venv="$cache/venv"
py_version="$("$python" -c 'import sys; print(sys.version.split()[0])')"
want="$(hash_of "$peers/requirements.txt")-python-$py_version"
if [[ -x "$venv/bin/scim2-server" && "$(cat "$venv/.bench-stamp" 2>/dev/null)" == "$want" ]]; then
  echo "install-peers: scim2-server up to date in $venv" >&2
else
  echo "install-peers: installing scim2-server into $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$peers/requirements.txt"
  "$venv/bin/python" -m pip check --disable-pip-version-check >&2
  echo "$want" >"$venv/.bench-stamp"
fi

# --- scimmy + scimmy-routers (npm) ---
app="$cache/scimmy"
node_version="$(node --version)"
want="$(hash_of "$peers/scimmy/package.json" "$peers/scimmy/package-lock.json")-node-$node_version"
mkdir -p "$app"
if [[ -d "$app/node_modules/scimmy-routers" && "$(cat "$app/.bench-stamp" 2>/dev/null)" == "$want" ]]; then
  echo "install-peers: scimmy up to date in $app" >&2
else
  echo "install-peers: installing scimmy into $app" >&2
  rm -f "$app/.bench-stamp"
  cp "$peers/scimmy/package.json" "$peers/scimmy/package-lock.json" "$app/"
  (cd "$app" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" >"$app/.bench-stamp"
fi
# server.js is copied every time (cheap), so that an edit in the checkout is always picked up.
cp "$peers/scimmy/server.js" "$app/server.js"

cat <<MSG
Peers installed under $cache. Start one in the foreground (bound to 127.0.0.1) with:
  $here/run-peer.sh scim2-server PORT   # base URL http://127.0.0.1:PORT/v2
  $here/run-peer.sh scimmy PORT         # base URL http://127.0.0.1:PORT/scim/v2
or directly:
  $venv/bin/scim2-server --hostname 127.0.0.1 --port PORT --bearer-token bench-token
  node $app/server.js --host 127.0.0.1 --port PORT --token bench-token
MSG
