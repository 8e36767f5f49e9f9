# shellcheck shell=bash
# Helpers shared by bench/backup.sh and bench/restore.sh; sourced, not run.
# They read the caller's globals (ROOT, WORK, RESULTS, PITR_BUCKET, SERVER,
# PITR_TEST_S3_*) and its log and die functions.

# Environment of pitr (and of the server, whose archive_command is pitr).
pitr_env() {
    printf '%s\n' \
        "PITR_REPO=s3://$PITR_BUCKET/pg" \
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
