#!/usr/bin/env bash
# Runs a local Kubernetes control plane (etcd + kube-apiserver) on 127.0.0.1 in
# the foreground, the way controller-runtime's envtest does.
#
#   run.sh --dir DIR [--port N] [--owner-pid PID]
#
# DIR receives etcd data, certificates, keys, logs (etcd.log, kube-apiserver.log),
# DIR/kubeconfig (admin token, CA-verified TLS) and, once /readyz answers 200,
# DIR/ready. The kubeconfig path is printed on stdout when the API server is ready.
# Stops both processes and exits 0 on SIGTERM/SIGINT, or as soon as --owner-pid is gone.
#
# Environment:
#   CLEANMAIL_CACHE          cache root used by build.sh (default: $HOME/.cache/cleanmail-operator)
#   CLEANMAIL_K8S_BIN        directory holding etcd and kube-apiserver (default: output of build.sh)
#   CLEANMAIL_READY_TIMEOUT  seconds to wait for /readyz (default: 120)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
    echo "usage: $0 --dir DIR [--port N] [--owner-pid PID]" >&2
    exit 2
}

# True while PID exists and is not a zombie (an exited process whose parent has
# not reaped it yet still answers kill -0).
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

dir="" port="" owner_pid=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dir) [[ $# -ge 2 ]] || usage; dir="$2"; shift 2 ;;
        --dir=*) dir="${1#*=}"; shift ;;
        --port) [[ $# -ge 2 ]] || usage; port="$2"; shift 2 ;;
        --port=*) port="${1#*=}"; shift ;;
        --owner-pid) [[ $# -ge 2 ]] || usage; owner_pid="$2"; shift 2 ;;
        --owner-pid=*) owner_pid="${1#*=}"; shift ;;
        -h | --help) usage ;;
        *) echo "run.sh: unknown argument: $1" >&2; usage ;;
    esac
done
[[ -n "$dir" ]] || usage
if [[ -n "$port" && ! "$port" =~ ^[0-9]+$ ]]; then
    echo "run.sh: --port must be a number, got '$port'" >&2
    exit 2
fi
if [[ -n "$owner_pid" ]]; then
    if [[ ! "$owner_pid" =~ ^[0-9]+$ ]]; then
        echo "run.sh: --owner-pid must be a number, got '$owner_pid'" >&2
        exit 2
    fi
    if ! alive "$owner_pid"; then
        echo "run.sh: owner process $owner_pid is not running" >&2
        exit 1
    fi
fi

log() { echo "run.sh: $*" >&2; }

# True when something accepts connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a port in 20000-32767 (below the usual ephemeral range) that nothing
# listens on and that is not in the arguments.
free_port() {
    local p taken i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12768))
        for taken in "$@"; do [[ "$p" == "$taken" ]] && continue 2; done
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    echo "run.sh: found no free port" >&2
    return 1
}

if [[ -n "$port" ]] && port_in_use "$port"; then
    echo "run.sh: port $port is already in use" >&2
    exit 1
fi

if [[ -n "${CLEANMAIL_K8S_BIN:-}" ]]; then
    bin="$CLEANMAIL_K8S_BIN"
else
    bin="$("$here/build.sh" | tail -n 1)"
fi
for b in etcd kube-apiserver; do
    if [[ ! -x "$bin/$b" ]]; then
        echo "run.sh: $bin/$b not found (run tools/controlplane/build.sh)" >&2
        exit 1
    fi
done
for tool in openssl curl; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
mkdir -p "$dir/etcd" "$dir/certs"
chmod 700 "$dir/etcd"
rm -f "$dir/ready" "$dir/kubeconfig"

[[ -n "$port" ]] || port="$(free_port)"
etcd_port="$(free_port "$port")"
etcd_peer_port="$(free_port "$port" "$etcd_port")"

# Admin credentials: a static token in group system:masters.
token="$(openssl rand -hex 24)"
(umask 077; printf '%s,admin,admin,system:masters\n' "$token" >"$dir/tokens.csv")

# Service-account signing key pair (kept across runs in the same DIR).
if [[ ! -s "$dir/sa.key" || ! -s "$dir/sa.pub" ]]; then
    (umask 077; openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null)
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
fi

etcd_pid="" apiserver_pid="" stopping=0

# If this script dies without running its traps (SIGKILL), the kernel signals the
# children: kube-apiserver gets SIGKILL (it keeps no state of its own, and its
# graceful shutdown stalls for long once etcd is going away), etcd gets SIGTERM.
etcd_guard=() apiserver_guard=()
if command -v setpriv >/dev/null && setpriv --pdeathsig TERM true 2>/dev/null; then
    etcd_guard=(setpriv --pdeathsig TERM)
    apiserver_guard=(setpriv --pdeathsig KILL)
fi

stop_one() {
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

shutdown() {
    [[ "$stopping" == 1 ]] && return 0
    stopping=1
    rm -f "$dir/ready"
    stop_one "$apiserver_pid"
    apiserver_pid=""
    stop_one "$etcd_pid"
    etcd_pid=""
    rm -f "$dir/etcd.pid" "$dir/kube-apiserver.pid"
}

show_logs() {
    local f
    for f in "$dir/etcd.log" "$dir/kube-apiserver.log"; do
        [[ -f "$f" ]] || continue
        echo "----- tail of $f -----" >&2
        tail -n 30 "$f" >&2
    done
}

fail() {
    echo "run.sh: $*" >&2
    show_logs
    shutdown
    exit 1
}

trap 'shutdown; exit 0' TERM
trap 'shutdown; exit 0' INT
trap 'shutdown' EXIT

log "starting etcd on 127.0.0.1:$etcd_port"
"${etcd_guard[@]}" "$bin/etcd" \
    --name=default \
    --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="default=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync \
    >"$dir/etcd.log" 2>&1 </dev/null &
etcd_pid=$!
echo "$etcd_pid" >"$dir/etcd.pid"

log "starting kube-apiserver on https://127.0.0.1:$port"
"${apiserver_guard[@]}" "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$port" \
    --cert-dir="$dir/certs" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true \
    --authorization-mode=RBAC \
    --token-auth-file="$dir/tokens.csv" \
    --disable-admission-plugins=ServiceAccount \
    --service-account-issuer="https://127.0.0.1:$port/" \
    --service-account-key-file="$dir/sa.pub" \
    --service-account-signing-key-file="$dir/sa.key" \
    >"$dir/kube-apiserver.log" 2>&1 </dev/null &
apiserver_pid=$!
echo "$apiserver_pid" >"$dir/kube-apiserver.pid"

check_children() {
    if ! kill -0 "$etcd_pid" 2>/dev/null; then
        fail "etcd exited unexpectedly"
    fi
    if ! kill -0 "$apiserver_pid" 2>/dev/null; then
        if grep -q "address already in use" "$dir/kube-apiserver.log" 2>/dev/null; then
            fail "port $port is already in use"
        fi
        fail "kube-apiserver exited unexpectedly"
    fi
}

check_owner() {
    if [[ -n "$owner_pid" ]] && ! alive "$owner_pid"; then
        log "owner process $owner_pid is gone; stopping"
        shutdown
        exit 0
    fi
}

# Sleeps in the background so that a signal is handled at once.
nap() {
    sleep "$1" &
    wait $! || true
}

timeout="${CLEANMAIL_READY_TIMEOUT:-120}"
deadline=$((SECONDS + timeout))
cert="$dir/certs/apiserver.crt"
kubeconfig_written=0
while :; do
    check_children
    check_owner
    if [[ "$kubeconfig_written" == 0 && -s "$cert" && -s "$dir/certs/apiserver.key" ]]; then
        ca_data="$(base64 -w0 <"$cert")"
        cat >"$dir/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cleanmail-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $ca_data
users:
- name: admin
  user:
    token: $token
contexts:
- name: cleanmail-local
  context:
    cluster: cleanmail-local
    user: admin
    namespace: default
current-context: cleanmail-local
EOF
        chmod 600 "$dir/kubeconfig.tmp"
        mv -f "$dir/kubeconfig.tmp" "$dir/kubeconfig"
        kubeconfig_written=1
    fi
    if [[ "$kubeconfig_written" == 1 ]]; then
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$cert" \
            -H "Authorization: Bearer $token" "https://127.0.0.1:$port/readyz" || true)"
        [[ "$code" == 200 ]] && break
    fi
    if ((SECONDS >= deadline)); then
        fail "kube-apiserver did not become ready within ${timeout}s"
    fi
    nap 0.5
done

date -u +%Y-%m-%dT%H:%M:%SZ >"$dir/ready"
log "ready: https://127.0.0.1:$port (etcd 127.0.0.1:$etcd_port), logs in $dir"
echo "$dir/kubeconfig"

while :; do
    check_children
    check_owner
    nap 1
done
