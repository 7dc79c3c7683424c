# syntax=docker/dockerfile:1
#
# Production image of inferd: the release binary, the ONNX Runtime library and the bundled
# models on Debian bookworm-slim, run as a fixed non-root user. deploy/docker/README.md says
# how to build, run, mount your own models and config, and refresh the pinned bases.
#
# Base images are pinned by digest (the tag before the @ is a label), so a rebuild of one
# commit starts from the same bytes. To move to a newer image of the same tag, read its
# index digest with
#   docker buildx imagetools inspect rust:1.95-slim-bookworm       (likewise the other two)
# and replace the sha256 on the FROM line. All three are bookworm, so the binary links against
# the same glibc it runs on.
#
# Caching: BuildKit cache mounts keep cargo's registry and target/ between builds (not
# cargo-chef): an edit in src/ recompiles only the inferd crate, a Cargo.lock bump only the
# crates that changed, and no extra tool needs installing and pinning. The ONNX Runtime stage
# depends only on its script, so its layer is reused until the pinned version changes.

# ---- ONNX Runtime library: the pinned wheel, sha256-checked by the script -----------------
# A Python image brings pip without apt; the stage runs alongside the Rust build.
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS ort
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY scripts/fetch-onnxruntime.sh scripts/
RUN bash scripts/fetch-onnxruntime.sh

# ---- Release binary ---------------------------------------------------------------------
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# The gRPC service's definition, compiled by build.rs (with a protoc of its own).
COPY proto ./proto
COPY src ./src
# target/ lives in a cache mount, which is not part of the layer: the binary is copied out
# in the same step.
RUN --mount=type=cache,id=inferd-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=inferd-target,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && cp target/release/inferd /usr/local/bin/inferd

# ---- Runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818 AS runtime
LABEL org.opencontainers.image.title="inferd" \
      org.opencontainers.image.description="Serve ONNX models over HTTP with typed JSON and dynamic batching" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed UID/GID, so that volume ownership and Kubernetes' runAsUser can be set to match.
# Only the prediction log folder is writable by it; the binary, config and models stay root's.
RUN groupadd --system --gid 10001 inferd \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin inferd \
    && mkdir -p /app/logs \
    && chown 10001:10001 /app/logs \
    && chmod 0750 /app/logs

WORKDIR /app
# Next to the binary as well, which inferd searches when ORT_DYLIB_PATH is unset.
COPY --from=ort /src/.ort/libonnxruntime.so.1.31.1 /app/libonnxruntime.so.1.31.1
COPY runtime.toml /app/runtime.toml
COPY models /app/models
COPY schemas /app/schemas
COPY --from=build /usr/local/bin/inferd /app/inferd

# INFERD_HOST: the built-in default, 127.0.0.1, is unreachable from outside a container.
# INFERD_CONFIG rather than --config on the command line, so `-e INFERD_CONFIG=...` can
# point at a mounted config. The prediction log goes to the volume wherever the config
# lives (a mounted config folder may be read-only). ORT_DISABLE_TELEMETRY: ONNX Runtime 1.31
# otherwise starts its telemetry uploader and tries to persist a device id, and warns twice
# at start when it cannot (no CA bundle, no writable home).
ENV INFERD_HOST=0.0.0.0 \
    PORT=8080 \
    INFERD_CONFIG=/app/runtime.toml \
    ORT_DYLIB_PATH=/app/libonnxruntime.so.1.31.1 \
    INFERD_PREDICTION_LOG_DIR=/app/logs \
    ORT_DISABLE_TELEMETRY=1

VOLUME ["/app/logs"]
EXPOSE 8080
USER 10001:10001

# `probe --ready` reads the same config, PORT and INFERD_HOST as `serve`, so it asks the
# port actually bound; no curl is needed. The start period covers model loading.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/app/inferd", "probe", "--ready"]
# On SIGTERM inferd drains: /ready turns 503 and in-flight requests get up to
# server.shutdown_grace_seconds (25 s). Docker kills after 10 s unless run with
# --stop-timeout 30 (Kubernetes' default grace is 30 s).
STOPSIGNAL SIGTERM
# PID 1 is inferd itself, which handles SIGTERM and has no children to reap.
ENTRYPOINT ["/app/inferd"]
CMD ["serve"]
