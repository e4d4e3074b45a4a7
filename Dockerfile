# The cleanmail-operator image, for machines with a Docker engine (`docker build -t cleanmail-operator .`).
# Without one, `just image` (tools/image.sh) builds the same image with crane; tests/image.rs checks
# that this file's final stage declares the same USER, ENTRYPOINT, CMD, EXPOSE and version.

# Build: a static binary, with the same target and flags as tools/image.sh (glibc, crt-static, stripped).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu --bin cleanmail-operator \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/cleanmail-operator /out/cleanmail-operator \
 && mkdir -p /out/data \
 && /out/cleanmail-operator crd | grep -q '^kind: CustomResourceDefinition$'

# Run: no shell, no libc; CA certificates, /etc/passwd with nonroot (65532) and /tmp come with the base.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/cleanmail/cleanmail-operator" \
      org.opencontainers.image.title="cleanmail-operator" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/cleanmail-operator /usr/local/bin/cleanmail-operator
# The chart mounts a volume here (the default SQLite backend lives on it).
COPY --from=build --chown=65532:65532 /out/data /var/lib/cleanmail
WORKDIR /
USER 65532:65532
EXPOSE 8080/tcp 9090/tcp
ENTRYPOINT ["/usr/local/bin/cleanmail-operator"]
CMD ["run"]
