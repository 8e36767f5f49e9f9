#!/usr/bin/env bash
# A throw-away single-node Ceph cluster (mon + one bluestore OSD + radosgw)
# living entirely inside one directory, for the S3 integration tests.
#
#   ceph-rgw.sh start DIR          create and start it, write DIR/env.sh
#   ceph-rgw.sh stop DIR           stop the daemons started in DIR (by pid file)
#   ceph-rgw.sh mkbucket DIR NAME  create a bucket (path style, over HTTPS)
#
# DIR should be short (admin sockets are unix sockets: path <= 107 bytes) and
# must not be on tmpfs (bluestore opens its block file with O_DIRECT).
# Several instances can run at once: every port is picked free at start.
#
# Options for running it inside a container (docker/ci/run-rgw.sh), from the
# environment; unset, the defaults the tests use:
#   RGW_BIND_ADDR   address radosgw listens on (default 127.0.0.1)
#   RGW_HTTP_PORT   its plain HTTP port (default: a free one)
#   RGW_ACCESS_KEY  the S3 user's access key (default pitrtestaccess)
#   RGW_SECRET_KEY  its secret key (default: a random one)
set -euo pipefail

RGW_NAME=client.rgw.pitr
ACCESS_KEY=${RGW_ACCESS_KEY:-pitrtestaccess}
BIND_ADDR=${RGW_BIND_ADDR:-127.0.0.1}
KMS_KEY_ID=testkey-1

die() { echo "ceph-rgw.sh: $*" >&2; exit 1; }
log() { echo "ceph-rgw.sh: $*" >&2; }

usage() {
    echo "usage: $0 start DIR | stop DIR | mkbucket DIR NAME" >&2
    exit 2
}

# Install the Ceph packages when radosgw is missing (Debian, root only).
ensure_packages() {
    command -v radosgw >/dev/null && command -v ceph-osd >/dev/null \
        && command -v ceph-mon >/dev/null && command -v ceph >/dev/null \
        && command -v openssl >/dev/null && command -v curl >/dev/null && return 0
    [[ $(id -u) -eq 0 ]] || die "Ceph is not installed and we are not root; run as root:
    apt-get install -y ceph-mon ceph-osd radosgw ceph-common openssl curl"
    log "installing Ceph packages (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The post-install step prints "Failed to connect to bus": harmless.
    apt-get install -y -qq ceph-mon ceph-osd radosgw ceph-common openssl curl >/dev/null
}

# Print N distinct free TCP ports on 127.0.0.1. They are picked at random
# below the kernel's ephemeral range (so outgoing connections do not take
# them) and outside Ceph's own 6800-7300, and checked by binding them.
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
n, ports = int(sys.argv[1]), []
while len(ports) < n:
    p = random.randrange(10000, 32000)
    if p in ports:
        continue
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    ports.append(p)
print(*ports)
EOF
}

# Private CA plus a server certificate for 127.0.0.1 / localhost (ECDSA P-256).
make_certs() {
    local d=$1
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.pem" -days 365 -subj "/CN=pitr test CA" \
        2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" 2>/dev/null
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 365 -out "$d/server.pem" \
        -extfile <(printf '%s\n' \
            "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth") 2>/dev/null
    rm -f "$d/server.csr"
}

# Signed S3 request with curl: s3curl DIR CURL-ARGS... (needs DIR/env.sh).
s3curl() {
    local d=$1; shift
    # shellcheck disable=SC1091
    source "$d/env.sh"
    curl -sS --cacert "$PITR_TEST_S3_CA" --aws-sigv4 "aws:amz:$PITR_TEST_S3_REGION:s3" \
        --user "$PITR_TEST_S3_ACCESS_KEY:$PITR_TEST_S3_SECRET_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}

start() {
    local d=$1 t0=$SECONDS
    ensure_packages
    mkdir -p "$d"
    d=$(cd "$d" && pwd)
    [[ ! -e $d/ceph.conf ]] || die "$d already holds a cluster (stop it and use a fresh DIR)"
    (( ${#d} <= 60 )) || die "DIR path too long for admin sockets: $d"
    mkdir -p "$d/run" "$d/log" "$d/mon-a" "$d/osd-0" "$d/rgw" "$d/crash"
    # On any failure from here on, stop what was started (logs stay in DIR).
    trap 'rc=$?; ((rc == 0)) || stop "'"$d"'"' EXIT

    local mon2 mon1 http https fsid secret kmskey
    read -r mon2 mon1 http https <<<"$(free_ports 4)"
    http=${RGW_HTTP_PORT:-$http}
    fsid=$(cat /proc/sys/kernel/random/uuid)
    secret=${RGW_SECRET_KEY:-$(openssl rand -hex 20)}
    kmskey=$(openssl rand -base64 32)
    make_certs "$d"

    # $name, $id and $cluster below are Ceph metavariables, not shell ones.
    cat >"$d/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $d/keyring
run dir = $d/run
pid file = $d/run/\$name.pid
log file = $d/log/\$name.log
log to stderr = false
crash dir = $d/crash
mon cluster log file = $d/log/cluster.log
mon data = $d/mon-\$id
osd data = $d/osd-\$id
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false

[mon]
admin socket = $d/run/\$cluster-\$name.asok
# Without this every pool creation waits about 1 s.
paxos propose interval = 0.1

[osd]
admin socket = $d/run/\$cluster-\$name.asok
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 10G
bluestore fsck on mkfs = false

[$RGW_NAME]
admin socket = $d/run/\$cluster-\$name.asok
rgw data = $d/rgw
rgw frontends = beast endpoint=$BIND_ADDR:$http ssl_endpoint=$BIND_ADDR:$https ssl_certificate=$d/server.pem ssl_private_key=$d/server.key
# SSE-KMS with a fixed test key; SSE over plain HTTP stays rejected.
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = $KMS_KEY_ID=$kmskey
rgw crypt require ssl = true
EOF
    export CEPH_CONF=$d/ceph.conf

    # One keyring with every key; ceph-mon --mkfs imports them all.
    local kr=$d/keyring
    ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$kr" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
    ceph-authtool "$kr" --gen-key -n osd.0 \
        --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *'
    ceph-authtool "$kr" --gen-key -n "$RGW_NAME" --cap mon 'allow rw' --cap osd 'allow rwx'

    # Monitor.
    monmaptool --create --fsid "$fsid" \
        --addv a "[v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]" "$d/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$d/monmap" --keyring "$kr"
    ceph-mon -c "$CEPH_CONF" -i a

    # OSD: register it, mkfs in the background while the pools are created.
    local uuid
    uuid=$(cat /proc/sys/kernel/random/uuid)
    [[ $(ceph osd new "$uuid") == 0 ]] || die "unexpected OSD id"
    ( ceph-osd -i 0 --mkfs --osd-uuid "$uuid" >"$d/log/osd-mkfs.log" 2>&1 \
        && ceph-osd -c "$CEPH_CONF" -i 0 >>"$d/log/osd-mkfs.log" 2>&1 ) &
    local osd_job=$!

    # RGW pools up front (faster than radosgw creating them one by one); one
    # interactive `ceph` session saves a Python start-up per command.
    local p cmds=""
    for p in .rgw.root default.rgw.log default.rgw.control default.rgw.meta \
        default.rgw.buckets.index default.rgw.buckets.non-ec default.rgw.buckets.data; do
        cmds+="osd pool create $p 8 8"$'\n'"osd pool application enable $p rgw"$'\n'
    done
    ceph <<<"$cmds" >"$d/log/pools.log" 2>&1 || { cat "$d/log/pools.log" >&2; die "pool creation failed"; }

    wait "$osd_job" || { cat "$d/log/osd-mkfs.log" >&2; die "ceph-osd failed to start"; }
    local i
    for ((i = 0; i < 300; i++)); do
        ceph osd stat -f json 2>/dev/null | grep -q '"num_up_osds":1' && break
        sleep 0.2
    done
    ((i < 300)) || die "OSD did not come up (see $d/log)"

    # radosgw, and the test user (radosgw-admin creates the default zone).
    radosgw -c "$CEPH_CONF" -n "$RGW_NAME"
    radosgw-admin user create --uid=pitrtest --display-name="pitr test" \
        --access-key="$ACCESS_KEY" --secret-key="$secret" >/dev/null

    cat >"$d/env.sh" <<EOF
export PITR_TEST_S3_ENDPOINT=https://127.0.0.1:$https
export PITR_TEST_S3_HTTP_ENDPOINT=http://127.0.0.1:$http
export PITR_TEST_S3_CA=$d/ca.pem
export PITR_TEST_S3_ACCESS_KEY=$ACCESS_KEY
export PITR_TEST_S3_SECRET_KEY=$secret
export PITR_TEST_S3_REGION=us-east-1
export PITR_TEST_S3_KMS_KEY_ID=$KMS_KEY_ID
EOF

    # Wait until the S3 API answers a signed request over HTTPS.
    local code=""
    for ((i = 0; i < 300; i++)); do
        code=$(s3curl "$d" -o /dev/null -w '%{http_code}' \
            "https://127.0.0.1:$https/" 2>/dev/null) || true
        [[ $code == 200 ]] && break
        sleep 0.2
    done
    [[ $code == 200 ]] || die "S3 API not answering over HTTPS (last status '$code', see $d/log)"

    # The tests run PostgreSQL as another user whose archive_command reads the
    # CA bundle and env.sh; the keys and keyring stay private.
    chmod 755 "$d"
    chmod 644 "$d/ca.pem" "$d/env.sh"
    trap - EXIT
    log "Ceph RGW up in $((SECONDS - t0)) s in $d"
    cat "$d/env.sh"
}

# Is process $1 running (and not a zombie waiting for a slow init to reap it)?
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# Print which of the given pids still run, after waiting up to $1 tenths of a second.
wait_gone() {
    local n=$1 i pid alive; shift
    for ((i = 0; i <= n; i++)); do
        alive=()
        for pid in "$@"; do running "$pid" && alive+=("$pid"); done
        ((${#alive[@]})) || return 0
        ((i == n)) || sleep 0.1
    done
    echo "${alive[@]}"
}

stop() {
    local d=$1 f pid pids=() alive
    [[ -d $d/run ]] || return 0
    d=$(cd "$d" && pwd)
    for f in "$d"/run/*.pid; do
        [[ -e $f ]] || continue
        pid=$(<"$f")
        # Only a live process started with this DIR (pid files can go stale).
        if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" \
            | grep -qF -- "-c $d/ceph.conf "; then
            kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        fi
        rm -f "$f"
    done
    # radosgw takes about 6 s to stop gracefully; nothing here is worth keeping.
    alive=$(wait_gone 20 "${pids[@]}")
    [[ -z $alive ]] && return 0
    # shellcheck disable=SC2086 # a list of pids
    kill -KILL $alive 2>/dev/null || true
    # shellcheck disable=SC2086
    alive=$(wait_gone 50 $alive)
    [[ -z $alive ]] || die "processes still running: $alive"
}

mkbucket() {
    local d=$1 name=$2 out
    # shellcheck disable=SC1091
    source "$d/env.sh"
    out=$(s3curl "$d" -w '\n%{http_code}' -X PUT "$PITR_TEST_S3_ENDPOINT/$name")
    [[ ${out##*$'\n'} == 200 ]] || die "creating bucket $name: $out"
}

case ${1:-} in
start) [[ $# -eq 2 ]] || usage; start "$2" ;;
stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
mkbucket) [[ $# -eq 3 ]] || usage; mkbucket "$2" "$3" ;;
*) usage ;;
esac
