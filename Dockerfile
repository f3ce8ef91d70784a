# bengkel-whatsapp: multi-stage build.
#   docker build -t bengkel-whatsapp .
#   docker run -e DATABASE_URL=postgres://... -e JWT_SECRET=... -p 8000:8000 bengkel-whatsapp
# The image has no PostgreSQL server: DATABASE_URL is required (the embedded-cluster mode of a
# bare `bengkel-whatsapp` needs the server binaries on the machine). `serve` applies migrations.

FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, in their own layer: rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The crate itself (migrations and assets are embedded at compile time).
COPY src ./src
COPY migrations ./migrations
COPY assets ./assets
# COPY keeps the context's modification times, which can be older than the dependency layer's
# stand-in sources: touch them so cargo rebuilds the crate.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/bengkel-whatsapp /usr/local/bin/bengkel-whatsapp

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 bengkel \
    && useradd --system --uid 10001 --gid bengkel --home-dir /app --shell /usr/sbin/nologin bengkel \
    && mkdir -p /app/data \
    && chown -R bengkel:bengkel /app
COPY --from=builder /usr/local/bin/bengkel-whatsapp /usr/local/bin/bengkel-whatsapp
WORKDIR /app
USER bengkel:bengkel
ENV BIND_ADDR=0.0.0.0:8000 \
    DATA_DIR=/app/data \
    LOG_FORMAT=json
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/bengkel-whatsapp"]
CMD ["serve"]
