#!/usr/bin/env bash
# Applies every CustomResourceDefinition manifest (*.yaml, *.yml) in CRD_DIR and
# waits until all CRDs report Established.
#
#   install-crds.sh KUBECONFIG CRD_DIR
#
# Environment:
#   KUBECTL          kubectl to use (default: the one build.sh puts in the cache, else kubectl on PATH)
#   CLEANMAIL_CACHE  cache root used by build.sh (default: $HOME/.cache/cleanmail-operator)
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 KUBECONFIG CRD_DIR" >&2
    exit 2
fi
kubeconfig="$1" crd_dir="$2"
[[ -f "$kubeconfig" ]] || { echo "install-crds.sh: no kubeconfig at $kubeconfig" >&2; exit 1; }
[[ -d "$crd_dir" ]] || { echo "install-crds.sh: no directory $crd_dir" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kubectl="${KUBECTL:-}"
if [[ -z "$kubectl" ]]; then
    version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v[0-9]/ { print $2; exit }' "$here/go.mod")"
    cached="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}/k8s-$version/kubectl"
    if [[ -x "$cached" ]]; then
        kubectl="$cached"
    else
        kubectl="kubectl"
    fi
fi

shopt -s nullglob
files=("$crd_dir"/*.yaml "$crd_dir"/*.yml)
if [[ ${#files[@]} -eq 0 ]]; then
    echo "install-crds.sh: no *.yaml or *.yml files in $crd_dir" >&2
    exit 1
fi
for f in "${files[@]}"; do
    "$kubectl" --kubeconfig "$kubeconfig" apply --server-side --force-conflicts -f "$f"
done
"$kubectl" --kubeconfig "$kubeconfig" wait --for condition=established --timeout=60s crd --all
