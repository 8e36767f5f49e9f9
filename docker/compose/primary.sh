#!/usr/bin/env bash
# The compose drill's primary (docker/compose.yaml, service primary): make
# the bucket if it is missing, initdb, and run PostgreSQL with
# archive_command = 'pitr wal-push %p'. The repository settings (PITR_REPO,
# PITR_ENDPOINT_URL, S3_ACCESS_KEY_ID, ...) come from the environment, which
# PostgreSQL passes on to archive_command. A throw-away server: trust
# authentication on the compose network, for the load and backup service.
set -euo pipefail

PGDATA=${PGDATA:-/var/lib/postgresql/drill}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

say() { printf 'primary: %s\n' "$*"; }
die() { printf 'primary: FAILED: %s\n' "$*" >&2; exit 1; }

# A value for a curl config file: "..." with \ and " escaped.
curl_quote() {
    local v=${1//\\/\\\\}
    printf '"%s"' "${v//\"/\\\"}"
}

# s3://BUCKET/prefix: the bucket, created with a signed PUT (200: created,
# 409: it exists already). The keys reach curl on stdin, never argv.
make_bucket() {
    local bucket=${PITR_REPO#s3://} out code
    bucket=${bucket%%/*}
    [[ "$PITR_REPO" == s3://* && -n "$bucket" ]] || return 0
    [[ -n "${PITR_ENDPOINT_URL:-}" ]] || die "PITR_ENDPOINT_URL is not set"
    local _
    for _ in $(seq 60); do
        out=$(printf 'user = %s\n' "$(curl_quote "$S3_ACCESS_KEY_ID:$S3_SECRET_ACCESS_KEY")" |
            curl -sS -K - --aws-sigv4 "aws:amz:${PITR_REGION:-us-east-1}:s3" \
                -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
                -o /dev/null -w '%{http_code}' -X PUT "${PITR_ENDPOINT_URL%/}/$bucket" 2>&1) || true
        code=${out##*$'\n'}
        case "$code" in
            200) say "created bucket $bucket at $PITR_ENDPOINT_URL"; return ;;
            409) say "bucket $bucket exists at $PITR_ENDPOINT_URL"; return ;;
        esac
        sleep 1
    done
    die "cannot create bucket $bucket at $PITR_ENDPOINT_URL: $out"
}

make_bucket
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    "$PG_BIN/initdb" -D "$PGDATA" --no-locale -E UTF8 -A trust >/dev/null
    cat >>"$PGDATA/postgresql.conf" <<CONF

# --- pitr compose drill ---
listen_addresses = '*'
archive_mode = on
archive_command = 'pitr wal-push "%p"'
wal_keep_size = '64MB'
track_commit_timestamp = on
CONF
    cat >>"$PGDATA/pg_hba.conf" <<HBA
host all all all trust
host replication all all trust
HBA
fi
say "starting PostgreSQL, archiving with pitr wal-push to $PITR_REPO (server ${PITR_SERVER_NAME:-})"
exec "$PG_BIN/postgres" -D "$PGDATA"
