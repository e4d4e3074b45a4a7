#!/usr/bin/env bash
# Builds the local control plane binaries (etcd, kube-apiserver) from the Go
# module in this directory into a versioned cache directory, and makes sure a
# matching kubectl sits beside them. Idempotent: a binary that is already there
# (and reports the pinned version) is not rebuilt. Prints the directory.
#
# Environment:
#   CLEANMAIL_CACHE          cache root (default: $HOME/.cache/cleanmail-operator)
#   CLEANMAIL_KUBECTL        path of a kubectl to use instead of the default lookup
#   CLEANMAIL_BUILD_KUBECTL  set to 1 to build kubectl from source even if one is installed
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v[0-9]/ { print $2; exit }' go.mod)"
if [[ -z "$version" ]]; then
    echo "build.sh: no 'k8s.io/kubernetes vX.Y.Z' requirement in $here/go.mod" >&2
    exit 1
fi
major="${version#v}"; major="${major%%.*}"
minor="${version#v*.}"; minor="${minor%%.*}"

cache="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}"
out="$cache/k8s-$version"
mkdir -p "$out"

# One build at a time per cache directory: a second caller waits, then finds
# the binaries in place.
if command -v flock >/dev/null; then
    exec 9>"$out/.build.lock"
    flock 9
fi

tmp_files=() build_pid=""
cleanup() {
    local f
    if [[ -n "$build_pid" ]]; then
        kill -TERM "$build_pid" 2>/dev/null || true
        wait "$build_pid" 2>/dev/null || true
    fi
    for f in "${tmp_files[@]+"${tmp_files[@]}"}"; do rm -f "$f"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Version stamps, as the upstream release build sets them (hack/lib/version.sh),
# so that /version and `kubectl version` report the real version.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version"
    ldflags+=" -X $pkg.gitMajor=$major"
    ldflags+=" -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
done

export CGO_ENABLED=0
# -mod=mod: a go.sum entry that a newer Go toolchain asks for is added instead of
# failing the build; go.mod itself pins every version.
export GOFLAGS="${GOFLAGS:-} -mod=mod"

# go_build NAME PACKAGE: builds to a temporary name, then renames, so an
# interrupted build never leaves a partial binary under the final name.
go_build() {
    local name="$1" pkg="$2" tmp
    tmp="$out/.$name.tmp.$$"
    tmp_files+=("$tmp")
    echo "building $name $version (first build takes several minutes) ..." >&2
    local start=$SECONDS
    # In the background, so that a signal is handled (and the build stopped) at once.
    # -w leaves DWARF out of the binary; -dwarf=false spares the compiler making it for every
    # package first, a fifth of the build's time.
    go build -trimpath -gcflags=all=-dwarf=false -ldflags "$ldflags" -o "$tmp" "$pkg" &
    build_pid=$!
    wait "$build_pid"
    build_pid=""
    mv -f "$tmp" "$out/$name"
    echo "built $name in $((SECONDS - start)) s" >&2
}

# etcd: the release pinned in go.mod (go.etcd.io/etcd/server/v3).
if [[ ! -x "$out/etcd" ]]; then
    go_build etcd ./etcd
fi

# kube-apiserver: rebuilt also when an existing binary lacks the version stamp.
if [[ ! -x "$out/kube-apiserver" ]] ||
    [[ "$("$out/kube-apiserver" --version 2>/dev/null)" != "Kubernetes $version" ]]; then
    rm -f "$out/kube-apiserver"
    go_build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
fi

# kubectl: always present as $out/kubectl (a symlink to an installed kubectl of
# the same minor version, or a binary built from this module).
kubectl_src=""
if [[ "${CLEANMAIL_BUILD_KUBECTL:-0}" != 1 ]]; then
    if [[ -n "${CLEANMAIL_KUBECTL:-}" ]]; then
        kubectl_src="$CLEANMAIL_KUBECTL"
    elif [[ -x "/usr/lib/google-cloud-sdk/bin/kubectl.$major.$minor" ]]; then
        kubectl_src="/usr/lib/google-cloud-sdk/bin/kubectl.$major.$minor"
    fi
fi
if [[ -n "$kubectl_src" ]]; then
    if [[ ! -x "$kubectl_src" ]]; then
        echo "build.sh: CLEANMAIL_KUBECTL=$kubectl_src is not executable" >&2
        exit 1
    fi
    if [[ "$(readlink "$out/kubectl" 2>/dev/null || true)" != "$kubectl_src" ]]; then
        ln -sfn "$kubectl_src" "$out/kubectl"
    fi
elif [[ ! -x "$out/kubectl" || -L "$out/kubectl" ]]; then
    # Missing, dangling, or a symlink while a build was asked for.
    rm -f "$out/kubectl"
    go_build kubectl k8s.io/kubernetes/cmd/kubectl
fi

echo "$out"
