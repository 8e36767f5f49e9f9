# CI's compose drill image (docker/ci-compose-drill.sh): the same contents
# as docker/drill.Dockerfile, on the local debootstrap base (pitr-base:local,
# PostgreSQL 15 from Debian) with a pitr binary built beforehand. The build
# context is a directory the CI script assembles: pitr, drill-workload.sh,
# compose/ and sql/drill/. Build with --pull=false: there is no registry.
ARG BASE_IMAGE=pitr-base:local
FROM ${BASE_IMAGE}
RUN mkdir -p /plan && chown postgres:postgres /plan
COPY pitr /usr/local/bin/pitr
COPY drill-workload.sh /usr/share/pitr/drill-workload.sh
COPY compose/ /usr/share/pitr/compose/
COPY sql/drill /usr/share/pitr/sql/drill
USER postgres
WORKDIR /var/lib/postgresql
