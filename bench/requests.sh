#!/usr/bin/env bash
# bench/requests.sh [PITR_BIN...]: how many store requests, and how many keys
# listed, a restore plan (`pitr restore --dry-run`, target latest) costs on
# an archive of 10,000 segments with 10 backups, one every 1,000 segments.
# The archive is generated (empty objects in a file:// repository, Barman
# backup.info files), which is enough for counting: the planner lists, it
# does not read WAL for a `latest` target. Each binary given is measured
# (default: a debug build of this checkout); S3 pages are keys / 1,000.
# Not a test: it prints numbers for docs/benchmarks.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEGMENTS=${SEGMENTS:-10000}
BACKUPS=${BACKUPS:-10}

work=$(mktemp -d /tmp/pitr-requests.XXXXXX)
trap 'rm -rf "$work"' EXIT
repo=$work/repo/main

if (($# == 0)); then
    (cd "$ROOT" && cargo build --quiet)
    set -- "$ROOT/target/debug/pitr"
fi

# Segment n of timeline 1 with 16 MiB segments: log n/256, seg n%256.
name_of() { printf '00000001%08X%08X' $(($1 / 256)) $(($1 % 256)); }

for ((n = 1; n <= SEGMENTS; n++)); do
    s=$(name_of "$n")
    mkdir -p "$repo/wals/${s:0:16}"
    : >"$repo/wals/${s:0:16}/$s.gz"
done
step=$((SEGMENTS / BACKUPS))
for ((b = 0; b < BACKUPS; b++)); do
    n=$((1 + b * step))
    s=$(name_of "$n")
    id=$(printf '202611%02dT000000' $((b + 1)))
    lsn_hi=$(printf '%X' $((n / 256)))
    lsn_lo=$(printf '%X' $(((n % 256) * 16777216 + 40)))
    end_lo=$(printf '%X' $(((n % 256) * 16777216 + 312)))
    mkdir -p "$repo/base/$id"
    cat >"$repo/base/$id/backup.info" <<EOF
backup_label=None
begin_time=2026-11-$(printf '%02d' $((b + 1))) 00:00:00.000000+00:00
begin_wal=$s
begin_xlog=$lsn_hi/$lsn_lo
end_time=2026-11-$(printf '%02d' $((b + 1))) 00:01:00.000000+00:00
end_wal=$s
end_xlog=$lsn_hi/$end_lo
server_name=main
status=DONE
systemid=7000000000000000001
timeline=1
version=150018
xlog_segment_size=16777216
EOF
done

printf '%-60s %9s %12s %9s\n' "binary" "requests" "keys listed" "S3 pages"
for bin in "$@"; do
    log=$work/log
    PITR_REPO=file://$work/repo PITR_SERVER_NAME=main \
        "$bin" --log-level debug restore --pgdata "$work/never" --dry-run >/dev/null 2>"$log" \
        || { cat "$log" >&2; exit 1; }
    [[ -z ${REQUESTS_DETAIL:-} ]] || grep -o "store request: .*" "$log" >&2
    requests=$(grep -c 'store request:' "$log" || true)
    keys=$(grep -o 'store request: LIST[^:]*: [0-9]* keys' "$log" | awk '{ s += $(NF - 1) } END { print s + 0 }')
    pages=$(grep -o 'store request: LIST[^:]*: [0-9]* keys' "$log" \
        | awk '{ k = $(NF - 1); p += (k > 1000 ? int((k + 999) / 1000) : 1) } END { print p + 0 }')
    printf '%-60s %9s %12s %9s\n' "$bin" "$requests" "$keys" "$pages"
done
