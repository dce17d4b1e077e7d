# Build stage: the same release build as scripts/build-release (run by .ci/run).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN scripts/build-release

# Runtime: a small image, a non-root user, the binary as the entrypoint, so
#   docker run IMAGE http://prom-a:9090 http://prom-b:9090
# works as the command line does.
FROM debian:bookworm-slim
# The system CAs, for https:// upstreams without a tls table.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home prom-ha-proxy
COPY --from=build /src/target/release/prom-ha-proxy /usr/local/bin/prom-ha-proxy
COPY config/prom-ha-proxy.toml /etc/prom-ha-proxy/prom-ha-proxy.toml
USER 10001
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/prom-ha-proxy"]
