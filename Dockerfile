# syntax=docker/dockerfile:1
# chatledger server image. It needs an external PostgreSQL (DATABASE_URL): the embedded
# cluster is for running the binary directly, so no PostgreSQL server is installed here.

FROM rust:1-bookworm AS builder
WORKDIR /src
# rust-toolchain.toml is left out on purpose: the image's own toolchain is used (Cargo.toml's
# rust-version guards the minimum) instead of downloading another one.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .sqlx ./.sqlx
COPY migrations ./migrations
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    SQLX_OFFLINE=true cargo build --release --locked \
    && cp target/release/chatledger /usr/local/bin/chatledger

FROM debian:bookworm-slim
# curl serves the container health check (see docker-compose.yml).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/chatledger \
        --create-home --shell /usr/sbin/nologin chatledger
COPY --from=builder /usr/local/bin/chatledger /usr/local/bin/chatledger
USER chatledger
WORKDIR /var/lib/chatledger
EXPOSE 8080
ENTRYPOINT ["chatledger"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
