#!/usr/bin/env bash
# Entry point of CI's RGW container: start the throw-away Ceph RGW with
# tests/support/ceph-rgw.sh in /var/lib/rgw/c, listening on all addresses
# on RGW_HTTP_PORT with the keys from the environment (RGW_ACCESS_KEY,
# RGW_SECRET_KEY), mark it ready for the healthcheck, and stop it on TERM.
set -euo pipefail
dir=/var/lib/rgw/c
here=/usr/share/pitr/rgw
rm -rf "$dir" /var/lib/rgw/ready
export RGW_BIND_ADDR=0.0.0.0
stop() {
    bash "$here/ceph-rgw.sh" stop "$dir" || true
    exit 0
}
trap stop TERM INT
bash "$here/ceph-rgw.sh" start "$dir" >/dev/null || {
    tail -n 20 "$dir"/log/*.log >&2 || true
    exit 1
}
touch /var/lib/rgw/ready
echo "rgw: Ceph RGW ready on port ${RGW_HTTP_PORT:-?} (plain HTTP)"
sleep infinity &
wait $!
