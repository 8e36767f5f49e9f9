#!/usr/bin/env bash
# preflight.sh: make sure this machine has what the tests need, the same
# list for `bash tests/run.sh` and for .ci/run. As root it installs what is
# missing from Debian's archive; otherwise it names each missing package and
# the command that installs it, and fails.
#
# Needed: PostgreSQL 15 server and client programs (the suite's server),
# Ceph mon/osd/radosgw (the throw-away RGW), openssl and curl (its
# certificates and health checks), python3-venv (the barman-cloud venv),
# npm and node (PostgreSQL 16-18 binaries for the version matrix),
# protoc (gRPC code generation for the CNPG-I plugin) and Prometheus
# (prometheus and promtool: the shipped alert rules and dashboard are
# tested on the real thing).
set -euo pipefail

missing=()
[[ -x /usr/lib/postgresql/15/bin/initdb && -x /usr/lib/postgresql/15/bin/pgbench ]] \
    || missing+=(postgresql-15 postgresql-client-15)
for pkg in ceph-mon ceph-osd radosgw ceph-common openssl curl python3-venv protobuf-compiler prometheus; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# npm and node may come from elsewhere (nodesource, nvm): Debian's only if absent.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then missing+=(npm); fi

((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]]; then
    echo "preflight: missing packages: ${missing[*]}" >&2
    echo "preflight: install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
fi
echo "preflight: installing ${missing[*]}" >&2
# The tests make their own PostgreSQL clusters: no system "main" cluster.
if [[ ! -e /etc/postgresql-common/createcluster.d/pitr-ci.conf ]]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/pitr-ci.conf
fi
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
# Ceph's post-install prints "Failed to connect to bus": harmless.
if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "preflight: apt-get install ${missing[*]} failed" >&2
    exit 1
fi
rm -f "$log"
