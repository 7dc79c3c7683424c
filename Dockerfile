# Minimal image: build the release binary and take the ONNX Runtime library from the pinned
# wheel, then run on a slim Debian. A later change hardens it (non-root user, health check).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN ./scripts/fetch-onnxruntime.sh && cargo build --release --locked

FROM debian:bookworm-slim
WORKDIR /app
COPY --from=build /src/target/release/inferd /app/inferd
COPY --from=build /src/.ort/libonnxruntime.so.1.31.1 /app/libonnxruntime.so.1.31.1
COPY runtime.toml /app/runtime.toml
COPY models /app/models
COPY schemas /app/schemas
ENV ORT_DYLIB_PATH=/app/libonnxruntime.so.1.31.1 PORT=8080
# The prediction log; mount a volume to keep it beyond the container.
VOLUME ["/app/logs"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/inferd", "serve", "--config", "/app/runtime.toml"]
