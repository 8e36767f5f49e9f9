# The compose drill's image (docker/compose.yaml): pitr built from source,
# on PostgreSQL 15's own image (server and client binaries in
# /usr/lib/postgresql/15/bin), with the drill's scripts and checks.
#
#   docker build -f docker/drill.Dockerfile -t pitr-drill:local .
#
# The base images are overridable, for registries that mirror them.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=postgres:15-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY plugin plugin
COPY tests tests
RUN cargo build --release --locked -p pitr --bin pitr

FROM ${RUNTIME_IMAGE}
# curl (with --aws-sigv4) makes the drill's bucket; bash runs the scripts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl bash \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /plan && chown postgres:postgres /plan
COPY --from=build /src/target/release/pitr /usr/local/bin/pitr
COPY docker/drill-workload.sh /usr/share/pitr/drill-workload.sh
COPY docker/compose/primary.sh docker/compose/load.sh docker/compose/drill.sh /usr/share/pitr/compose/
COPY sql/drill /usr/share/pitr/sql/drill
# PostgreSQL and pitr drill refuse to run as root.
USER postgres
WORKDIR /var/lib/postgresql
