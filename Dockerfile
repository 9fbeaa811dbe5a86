# mcpgate container image: see deploy/README.md.
#
#   docker build -t mcpgate .
#   docker run --rm -p 8080:8080 -e MCP_AUTH_TOKEN=… mcpgate
#
# Two stages: a Rust builder (dependencies compiled in their own cached layer) and a small
# Debian runtime with only CA certificates, running as an unprivileged user.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# 1. Dependencies only. The manifests, the lock file and the build scripts, with stub sources
#    (and stubs for the declared benches, which cargo wants to see): this layer is rebuilt only
#    when Cargo.toml, Cargo.lock or a build script changes.
COPY Cargo.toml Cargo.lock ./
COPY crates/mcpgate/Cargo.toml crates/mcpgate/build.rs crates/mcpgate/
COPY crates/mcpgate-auth/Cargo.toml crates/mcpgate-auth/build.rs crates/mcpgate-auth/
RUN mkdir -p crates/mcpgate/src crates/mcpgate/benches crates/mcpgate-auth/src crates/mcpgate-auth/benches \
 && echo 'fn main() {}' > crates/mcpgate/src/main.rs \
 && touch crates/mcpgate/src/lib.rs crates/mcpgate-auth/src/lib.rs \
 && echo 'fn main() {}' > crates/mcpgate/benches/policy.rs \
 && echo 'fn main() {}' > crates/mcpgate-auth/benches/verify.rs \
 && cargo build --profile dist --locked -p mcpgate \
 && rm -rf crates/mcpgate/src crates/mcpgate/benches crates/mcpgate-auth/src crates/mcpgate-auth/benches

# 2. The real sources (migrations and page templates are embedded at compile time). Touch
#    them so cargo never mistakes a stub's fingerprint for the real crate's.
COPY crates crates
RUN find crates -type f -exec touch {} + \
 && cargo build --profile dist --locked -p mcpgate \
 && install -Dm0755 target/dist/mcpgate /out/mcpgate

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mcpgate \
 && useradd --system --uid 10001 --gid mcpgate --home-dir /var/lib/mcpgate --shell /usr/sbin/nologin mcpgate \
 && install -d -o mcpgate -g mcpgate -m 0750 /var/lib/mcpgate

COPY --from=builder /out/mcpgate /usr/local/bin/mcpgate

# The working directory holds the default SQLite files (the built-in notes tools, and the
# built-in authorization server's store unless MCP_OAUTH_STORE names another): mount a volume
# here, or use PostgreSQL (MCP_OAUTH_STORE=postgres://…) when several instances serve.
WORKDIR /var/lib/mcpgate

# Container defaults: HTTP on every interface, port 8080 (Cloud Run's PORT must equal it),
# JSON logs. MCP_ALLOWED_HOSTS and, with OAuth, MCP_OAUTH_PUBLIC_URL must be set per deployment.
ENV MCP_TRANSPORT=streamable-http \
    MCP_HOST=0.0.0.0 \
    MCP_PORT=8080 \
    MCP_LOG_FORMAT=json \
    MCP_NOTES_DB=/var/lib/mcpgate/notes.db

USER 10001:10001
EXPOSE 8080

# No HEALTHCHECK: platforms probe GET /health (liveness) and GET /ready (readiness) themselves.
ENTRYPOINT ["mcpgate"]
CMD ["serve"]
