# syntax=docker/dockerfile:1
# defsync as a container image: the binary, git and CA certificates, nothing else.
#
#   docker build -t defsync .                    # builds from source (the default target)
#   docker run --rm -v "$PWD:/work" -w /work -e DEFSYNC_PLATFORM -e DEFSYNC_API_KEY \
#     -e DEFSYNC_PROJECT defsync status
#
# The reference platform (see the README, "Running `defsync serve` from the image"):
#   docker run -d -p 8787:8787 -v defsync-data:/data -e DEFSYNC_SERVER_KEYS=<key> defsync serve
#
# The release workflow builds the `release` target instead, from the binaries it already built
# and checksummed (docker-dist/<os>/<arch>/defsync), so the image holds exactly those bytes.

ARG ALPINE_VERSION=3.22
ARG RUST_VERSION=1.95

# ---- build: compile a static musl binary from source --------------------------------------
FROM rust:${RUST_VERSION}-alpine AS build
# musl-dev for the C runtime, gcc for the bundled SQLite.
RUN apk add --no-cache musl-dev gcc
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
# Cache mounts keep the registry and the target directory between builds on the same builder.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 755 target/release/defsync /defsync \
    && /defsync --version

# ---- runtime: what every final image has --------------------------------------------------
FROM alpine:${ALPINE_VERSION} AS runtime-base
# git: defsync drives git for pull and push. ca-certificates: https to the platform.
# A fixed non-root user; /data is where `serve` keeps its store.
# Mounted work trees belong to another user, and git would refuse them as "dubious ownership":
# the image trusts any directory, as it only ever works on what it is given.
RUN apk add --no-cache git ca-certificates \
    && adduser -D -H -u 10001 -s /sbin/nologin defsync \
    && mkdir -p /data && chown defsync:defsync /data \
    && git config --system --add safe.directory '*'
# serve's defaults for a container: listen on all interfaces, keep the store in the volume.
ENV DEFSYNC_LOG=info \
    DEFSYNC_STORE=/data/store.db \
    DEFSYNC_LISTEN=0.0.0.0:8787
VOLUME ["/data"]
EXPOSE 8787
# `serve` answers GET /healthz (no key; it checks the store). The image has no curl, so the
# binary asks itself: `serve healthcheck` reads DEFSYNC_LISTEN and asks on loopback. A one-shot
# command (status, push, ...) ends within the start period, before any check counts.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["defsync", "serve", "healthcheck", "--timeout", "4"]
USER defsync
ENTRYPOINT ["defsync"]
CMD ["--help"]

# ---- release: the binaries the release workflow built and published -----------------------
FROM runtime-base AS release
ARG TARGETPLATFORM
COPY --chmod=755 docker-dist/${TARGETPLATFORM}/defsync /usr/local/bin/defsync

# ---- default: built from source ------------------------------------------------------------
FROM runtime-base AS runtime
COPY --from=build /defsync /usr/local/bin/defsync
