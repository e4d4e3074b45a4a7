#!/usr/bin/env bash
# Builds the container image of cleanmail-operator as an OCI image archive without a Docker daemon:
#
#   1. a static binary (glibc, crt-static: the toolchain's own target, so nothing beyond the
#      registries is needed) built by cargo in
#      $CACHE/target-image, so cargo rebuilds only what changed;
#   2. one layer, assembled with GNU tar with fixed owners, modes and mtimes: the binary, Debian's CA
#      bundle, /etc/passwd and /etc/group with the user nonroot (65532) and /var/lib/cleanmail owned
#      by it; no shell, no libc, nothing else;
#   3. the image put together by crane (`just deps` builds it): `crane append --oci-empty-base` then
#      `crane mutate` for the config. crane's mutate reads and writes only through the registry API,
#      so both talk to `crane registry serve`, an in-memory registry of crane's own listening on
#      127.0.0.1 for the length of this script; nothing leaves the machine;
#   4. `crane pull --format oci` into an OCI image layout, to which a docker-style manifest.json is
#      added (as `docker save` does since Docker 25), tarred deterministically into
#      $CACHE/image/cleanmail-operator.tar: `docker load`, `podman load` and `crane push` take it.
#
# $CACHE is ${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}. SOURCE_DATE_EPOCH (default 0) sets
# the mtimes in the layer and the archive. The Dockerfile builds the same image with a Docker engine;
# tests/image.rs checks the archive and that the two agree.
set -euo pipefail
umask 022

die() { echo "image: $*" >&2; exit 1; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${CLEANMAIL_CACHE:-$HOME/.cache/cleanmail-operator}"
crane="$cache/bin/crane"
target=x86_64-unknown-linux-gnu
image_name=ghcr.io/cleanmail/cleanmail-operator
source_url=https://github.com/cleanmail/cleanmail-operator
epoch="${SOURCE_DATE_EPOCH:-0}"
out_dir="$cache/image"
out="$out_dir/cleanmail-operator.tar"

[[ -x "$crane" ]] || die "$crane not found: run \`just deps\` (tools/install-deps.sh builds it)"
command -v jq >/dev/null || die "jq not found: run \`just deps\`"
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || die "/etc/ssl/certs/ca-certificates.crt missing: run \`just deps\` (Debian's ca-certificates)"

version="$(awk -F'"' '/^\[/ { in_package = ($0 == "[package]") } in_package && /^version *=/ { print $2; exit }' "$repo/Cargo.toml")"
[[ -n "$version" ]] || die "no [package] version in $repo/Cargo.toml"

# --- 1. the static binary ---
# The same flags as the Dockerfile's build stage: crt-static links glibc statically (its DNS and
# files lookups are built into libc since glibc 2.34, so no NSS module is loaded at run time).
echo "image: building cleanmail-operator $version for $target (cargo, release)" >&2
(
  cd "$repo"
  CARGO_TARGET_DIR="$cache/target-image" \
  RUSTFLAGS="-C target-feature=+crt-static" \
  CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$target" --bin cleanmail-operator
) || die "cargo build failed"
binary="$cache/target-image/$target/release/cleanmail-operator"
[[ -x "$binary" ]] || die "$binary missing after cargo build"
elf="$(readelf -lW -dW "$binary")" || die "readelf $binary failed"
if grep -q -e 'Requesting program interpreter' -e '(NEEDED)' <<<"$elf"; then
  die "$binary is dynamically linked (it has a program interpreter or needs shared libraries)"
fi
crds="$(timeout 60 "$binary" crd)" || die "\`$binary crd\` failed"
grep -q '^kind: CustomResourceDefinition$' <<<"$crds" || die "\`$binary crd\` did not print the CRDs"

work="$(mktemp -d "${TMPDIR:-/tmp}/cleanmail-image.XXXXXX")"
registry_pid=
cleanup() {
  if [[ -n "$registry_pid" ]]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- 2. the layer ---
root="$work/rootfs"
mkdir -p "$root"/{etc/ssl/certs,usr/local/bin,var/lib/cleanmail,tmp}
install -m 0755 "$binary" "$root/usr/local/bin/cleanmail-operator"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/var/lib/cleanmail:/sbin/nologin
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"
find "$root" -type d -exec chmod 0755 {} +
chmod 1777 "$root/tmp"
tar_common=(--format=ustar --sort=name --mtime="@$epoch" --numeric-owner)
layer="$work/layer.tar"
# Everything root-owned first, then the data directory owned by nonroot (the chart mounts a volume there).
tar "${tar_common[@]}" --owner=0 --group=0 --exclude=var/lib/cleanmail \
  -C "$root" -cf "$layer" etc tmp usr var
tar "${tar_common[@]}" --owner=65532 --group=65532 --no-recursion \
  -C "$root" -rf "$layer" var/lib/cleanmail
gzip -n -9 "$layer"
layer="$layer.gz"

# --- 3. the image, through crane's registry on 127.0.0.1 ---
export DOCKER_CONFIG="$work/docker-config" # no credentials or credential helpers are consulted
mkdir -p "$DOCKER_CONFIG"
"$crane" registry serve --address 127.0.0.1:0 >"$work/registry.log" 2>&1 &
registry_pid=$!
port=
for _ in $(seq 100); do
  port="$(sed -n 's/.*serving on port \([0-9][0-9]*\).*/\1/p' "$work/registry.log")"
  [[ -n "$port" ]] && break
  kill -0 "$registry_pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$port" ]] || die "crane registry serve did not start: $(cat "$work/registry.log")"
ref="127.0.0.1:$port/cleanmail-operator:$version"

crane_quiet() { timeout 120 "$crane" "$@" >>"$work/crane.log" 2>&1 || die "crane $1 failed: $(cat "$work/crane.log")"; }
crane_quiet append --oci-empty-base --new_layer "$layer" --new_tag "$ref"
crane_quiet mutate "$ref" --tag "$ref" \
  --set-platform linux/amd64 \
  --entrypoint /usr/local/bin/cleanmail-operator \
  --cmd run \
  --user 65532:65532 \
  --workdir / \
  --exposed-ports 8080/tcp,9090/tcp \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --label org.opencontainers.image.source="$source_url" \
  --label org.opencontainers.image.title=cleanmail-operator \
  --label org.opencontainers.image.version="$version"
crane_quiet validate --remote "$ref"

# --- 4. the archive: an OCI image layout plus docker's manifest.json ---
layout="$work/layout"
crane_quiet pull --format oci "$ref" "$layout"
kill "$registry_pid" 2>/dev/null || true
wait "$registry_pid" 2>/dev/null || true
registry_pid=

manifest_digest="$(jq -er '.manifests | if length == 1 then .[0].digest else error("expected one manifest") end' "$layout/index.json")"
manifest_size="$(jq -er '.manifests[0].size' "$layout/index.json")"
manifest_blob="$layout/blobs/${manifest_digest/://}"
jq -n --arg digest "$manifest_digest" --argjson size "$manifest_size" \
  --arg name "$image_name:$version" --arg tag "$version" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: $digest,
      size: $size,
      platform: {architecture: "amd64", os: "linux"},
      annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $tag}
    }]
  }' >"$layout/index.json"
jq --arg name "$image_name:$version" '[{
    Config: ("blobs/" + (.config.digest | sub(":"; "/"))),
    RepoTags: [$name],
    Layers: [.layers[].digest | "blobs/" + sub(":"; "/")]
  }]' "$manifest_blob" >"$layout/manifest.json"

mkdir -p "$out_dir"
find "$layout" -type f -exec chmod 0644 {} +
find "$layout" -type d -exec chmod 0755 {} +
tar "${tar_common[@]}" --owner=0 --group=0 -C "$layout" -cf "$out.tmp.$$" oci-layout index.json manifest.json blobs
mv -f "$out.tmp.$$" "$out"
timeout 120 "$crane" validate --tarball "$out" >"$work/validate.log" 2>&1 \
  || die "crane validate --tarball $out failed: $(cat "$work/validate.log")"

echo "image: $image_name:$version ($manifest_digest), $(du -h "$out" | cut -f1) OCI image archive:" >&2
echo "$out"
