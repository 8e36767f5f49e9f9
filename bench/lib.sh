# shellcheck shell=bash
# Helpers shared by the scripts under bench/; sourced, not run. They read
# the caller's globals (ROOT, WORK, RESULTS, PITR_BUCKET, PITR_PREFIX,
# PGBR_BUCKET, PGBR_PATH, SERVER, PGDATA, SOCK, PORT, PITR_TEST_S3_*) and
# its log and die functions; a caller may set them as locals of the
# function that calls a helper (bash scoping is dynamic).

# Environment of pitr (and of the server, whose archive_command is pitr).
pitr_env() {
    printf '%s\n' \
        "PITR_REPO=s3://$PITR_BUCKET/${PITR_PREFIX:-pg}" \
        "PITR_SERVER_NAME=$SERVER" \
        "PITR_ENDPOINT_URL=$PITR_TEST_S3_ENDPOINT" \
        "PITR_CA_BUNDLE=$PITR_TEST_S3_CA" \
        "S3_ACCESS_KEY_ID=$PITR_TEST_S3_ACCESS_KEY" \
        "S3_SECRET_ACCESS_KEY=$PITR_TEST_S3_SECRET_KEY"
}

# Environment of barman-cloud (boto3).
barman_env() {
    printf '%s\n' \
        "AWS_ACCESS_KEY_ID=$PITR_TEST_S3_ACCESS_KEY" \
        "AWS_SECRET_ACCESS_KEY=$PITR_TEST_S3_SECRET_KEY" \
        "AWS_CA_BUNDLE=$PITR_TEST_S3_CA" \
        "AWS_DEFAULT_REGION=$PITR_TEST_S3_REGION" \
        "AWS_REQUEST_CHECKSUM_CALCULATION=when_required" \
        "AWS_RESPONSE_CHECKSUM_VALIDATION=when_required"
}

# median KEY COLUMN: the median of one column (1-based, of results.tsv) for one variant.
median() {
    awk -F'\t' -v k="$1" -v c="$2" '$1 == k { print $c }' "$RESULTS" | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2];
                                   else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The pitr binary: PITR_BIN, or a release build of this checkout.
build_pitr() {
    local src=${PITR_BIN:-}
    if [[ -z $src ]]; then
        log "cargo build --release (minutes the first time)"
        (cd "$ROOT" && cargo build --release --quiet)
        src=$ROOT/target/release/pitr
    fi
    [[ -x $src ]] || die "not an executable: $src"
    install -m 755 "$src" "$WORK/bin/pitr"
    PITR=$WORK/bin/pitr
    log "pitr: $("$PITR" --version 2>/dev/null || echo "$src")"
}

# Restarts radosgw (only it, by its pid file) with tcp_nodelay=1 on the
# beast frontend, and waits until the S3 API answers again. Reads RGW_DIR
# and the PITR_TEST_S3_* of its env.sh.
restart_rgw_nodelay() {
    local name=client.rgw.pitr pid i code=""
    pid=$(<"$RGW_DIR/run/$name.pid")
    kill -TERM "$pid"
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    sed -i '/^rgw frontends = beast/ s/$/ tcp_nodelay=1/' "$RGW_DIR/ceph.conf"
    CEPH_CONF=$RGW_DIR/ceph.conf radosgw -c "$RGW_DIR/ceph.conf" -n "$name"
    for ((i = 0; i < 300; i++)); do
        code=$(curl -sS --cacert "$PITR_TEST_S3_CA" --aws-sigv4 "aws:amz:$PITR_TEST_S3_REGION:s3" \
            --user "$PITR_TEST_S3_ACCESS_KEY:$PITR_TEST_S3_SECRET_KEY" \
            -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o /dev/null \
            -w '%{http_code}' "$PITR_TEST_S3_ENDPOINT/" 2>/dev/null) || true
        [[ $code == 200 ]] && break
        sleep 0.2
    done
    [[ $code == 200 ]] || die "radosgw did not come back with tcp_nodelay=1 (status '$code')"
    log "radosgw restarted with tcp_nodelay=1"
}

# pgBackRest (Debian's package, installed when missing and we are root).
ensure_pgbackrest() {
    if ! command -v pgbackrest >/dev/null; then
        [[ $(id -u) -eq 0 ]] || die "pgbackrest is missing; as root: apt-get install pgbackrest"
        log "installing the Debian package 'pgbackrest'"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbackrest >/dev/null
    fi
    log "$(pgbackrest version)"
}

# pgbackrest_conf FILE [EXTRA-GLOBAL-LINE...]: a pgBackRest settings file for
# the RGW bucket PGBR_BUCKET, under PGBR_PATH (default /pgbackrest), for
# the cluster PGDATA on SOCK and PORT (mode 0600, owned by postgres: it holds the S3 secret).
pgbackrest_conf() {
    local file=$1; shift
    local port=${PITR_TEST_S3_ENDPOINT##*:}
    {
        echo "[global]"
        echo "repo1-type=s3"
        # pgBackRest 2.45 checks only DNS names in the certificate, not its
        # IP address entry: 127.0.0.1 fails with "[095]: unable to find
        # hostname '127.0.0.1' in certificate"; the RGW's cert also names localhost.
        echo "repo1-s3-endpoint=localhost"
        echo "repo1-storage-port=$port"
        echo "repo1-storage-ca-file=$PITR_TEST_S3_CA"
        echo "repo1-s3-uri-style=path"
        echo "repo1-s3-bucket=$PGBR_BUCKET"
        echo "repo1-s3-region=$PITR_TEST_S3_REGION"
        echo "repo1-s3-key=$PITR_TEST_S3_ACCESS_KEY"
        echo "repo1-s3-key-secret=$PITR_TEST_S3_SECRET_KEY"
        echo "repo1-path=${PGBR_PATH:-/pgbackrest}"
        echo "repo1-retention-full=2"
        echo "log-path=$WORK/pgbackrest/log"
        echo "lock-path=$WORK/pgbackrest/lock"
        echo "log-level-console=warn"
        echo "log-level-file=info"
        echo "start-fast=y"
        printf '%s\n' "$@"
        echo
        echo "[$SERVER]"
        echo "pg1-path=$PGDATA"
        echo "pg1-socket-path=$SOCK"
        echo "pg1-port=$PORT"
        echo "pg1-user=postgres"
    } >"$file"
    chmod 600 "$file"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$file"
}


free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
