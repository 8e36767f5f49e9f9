#!/usr/bin/env bash
# CI's compose drill: the same docker/compose.yaml a user runs, on a machine
# with no image registry. It
#   1. installs Debian's Docker engine, docker-compose (v1) and debootstrap
#      if they are missing,
#   2. builds (or takes from its cache) a debootstrap bookworm root with
#      PostgreSQL 15 and Ceph, and imports it as pitr-base:local,
#   3. starts its own dockerd (data root and socket in a temporary directory,
#      no iptables), and stops it by pid at the end,
#   4. builds two images FROM pitr-base:local with --pull=false: the drill
#      image with a pitr binary built beforehand (docker/ci/drill-prebuilt.Dockerfile)
#      and a Ceph RGW (docker/ci/rgw.Dockerfile, run by tests/support/ceph-rgw.sh),
#   5. runs compose.yaml with docker/compose.ci.yaml (the RGW instead of MinIO)
#      and exits with the drill service's exit status.
#
# Environment:
#   PITR_BIN      the pitr binary to put in the image (default target/debug/pitr,
#                 which tests/run.sh builds; built with `cargo build` if missing)
#   PITR_CI_CACHE where the base root's tarball is kept between runs
#                 (default /opt/pitr-test/compose-base), keyed by its recipe
#   COMPOSE       the compose command (default: `docker compose` if the v2
#                 plugin is there, else docker-compose)
#   PITR_DRILL_EXTRA_CHECK_SQL  passed to the drill service (one more check;
#                 `select false` must make the run fail)
#   PITR_CI_COMPOSE_EXTRA  one more compose override file (absolute path),
#                 e.g. to break a service and see the run fail
# Must run as root.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
readonly REPO_ROOT

readonly SUITE=bookworm
readonly BASE_PACKAGES=(
    postgresql-15 postgresql-client-15 ca-certificates curl openssl python3 procps
    ceph-mon ceph-osd radosgw ceph-common
)
readonly RECIPE_VERSION=1 # bump when the way the root is made changes
CACHE=${PITR_CI_CACHE:-/opt/pitr-test/compose-base}
PROJECT=pitr-ci-drill-$$
T0=$SECONDS

say() { printf 'ci-compose-drill: [%3ss] %s\n' "$((SECONDS - T0))" "$*"; }
die() {
    printf 'ci-compose-drill: FAILED: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root (it starts dockerd and runs debootstrap)"

# ---------------------------------------------------------------- packages

ensure_packages() {
    local missing=() p
    for p in docker.io docker-compose debootstrap; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local log
    log=$(mktemp)
    # docker.io's post-install cannot start a service here (no systemd): harmless.
    if ! { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$log"
}

# The mirror apt uses (deb822 sources in /etc/apt/sources.list.d/, or
# sources.list), for debootstrap.
apt_mirror() {
    local m
    m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{ print $2 }' | grep -v security | head -n 1 || true)
    [[ -n "$m" ]] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null |
        awk '{ print $2 }' | grep -v security | head -n 1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------- base root

# Prints the path of the base root's tarball, made now unless the cache has
# it for this exact recipe (suite, mirror, packages).
base_tarball() {
    local mirror key tarball root
    mirror=$(apt_mirror)
    key=$(printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$mirror" "${BASE_PACKAGES[@]}" | sha256sum | cut -c1-16)
    tarball=$CACHE/pitr-base-$key.tar
    if [[ -s "$tarball" ]]; then
        say "base root from the cache: $tarball" >&2
        echo "$tarball"
        return
    fi
    mkdir -p "$CACHE"
    root=$(mktemp -d "$CACHE/root.XXXXXX")
    say "debootstrap --variant=minbase $SUITE from $mirror (about 2 minutes; cached afterwards)" >&2
    local packages
    packages=$(IFS=,; echo "${BASE_PACKAGES[*]}")
    if ! debootstrap --variant=minbase --include="$packages" "$SUITE" "$root" "$mirror" \
        >"$root.log" 2>&1; then
        tail -n 30 "$root.log" >&2
        rm -rf --one-file-system "$root"
        die "debootstrap failed (log: $root.log)"
    fi
    # No apt caches, and no default cluster: the drill makes its own.
    rm -rf "$root/var/cache/apt/"* "$root/var/lib/apt/lists/"* \
        "$root/var/lib/postgresql/15/main" "$root/etc/postgresql/15/main"
    tar -C "$root" -cf "$tarball.tmp" .
    rm -rf --one-file-system "$root" "$root.log"
    # Only this recipe's tarball stays.
    find "$CACHE" -maxdepth 1 -name 'pitr-base-*.tar' ! -name "pitr-base-$key.tar" -delete
    mv "$tarball.tmp" "$tarball"
    echo "$tarball"
}

# ---------------------------------------------------------------- dockerd

TMP=""
DOCKERD_PID=""
OWN_BRIDGE=0 # 1 when our dockerd made docker0 (dockerd leaves it behind)

compose() {
    local extra=()
    [[ -z "${PITR_CI_COMPOSE_EXTRA:-}" ]] || extra=(-f "$PITR_CI_COMPOSE_EXTRA")
    "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$REPO_ROOT/docker/compose.yaml" \
        -f "$REPO_ROOT/docker/compose.ci.yaml" "${extra[@]}" "$@"
}

# shellcheck disable=SC2317 # called from the trap
# Is process $1 running (not gone, not a zombie waiting to be reaped)?
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# shellcheck disable=SC2317 # called from the trap
cleanup() {
    local rc=$?
    set +e
    if [[ -n "$DOCKERD_PID" ]]; then
        if [[ -n "${COMPOSE_CMD:-}" ]]; then
            say "compose down"
            compose down -v --remove-orphans -t 10 >"$TMP/down.log" 2>&1 ||
                { echo "ci-compose-drill: compose down failed:" >&2; tail -n 5 "$TMP/down.log" >&2; }
        fi
        say "stopping dockerd $DOCKERD_PID"
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        local i
        for ((i = 0; i < 300; i++)); do
            running "$DOCKERD_PID" || break
            sleep 0.1
        done
        if ((i > 50)); then
            echo "ci-compose-drill: dockerd took $((i / 10)) s to stop; the end of its log:" >&2
            tail -n 15 "$TMP/dockerd.log" >&2
        fi
        if running "$DOCKERD_PID"; then
            echo "ci-compose-drill: dockerd $DOCKERD_PID did not stop; killing it" >&2
            kill -KILL "$DOCKERD_PID" 2>/dev/null
            sleep 1
        fi
        ((OWN_BRIDGE)) && ip link delete docker0 2>/dev/null
    fi
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        say "removing $TMP"
        # Whatever dockerd left mounted under TMP, innermost first.
        findmnt -rn -o TARGET | grep -F "$TMP/" | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null
        done
        rm -rf --one-file-system "$TMP"
    fi
    say "done (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_dockerd() {
    # Short: the daemon's and containerd's sockets live inside it.
    TMP=$(mktemp -d /tmp/pitr-ci-dkr.XXXXXX)
    mkdir -p "$TMP/data" "$TMP/exec"
    ip link show docker0 >/dev/null 2>&1 || OWN_BRIDGE=1
    dockerd --data-root "$TMP/data" --exec-root "$TMP/exec" --pidfile "$TMP/dockerd.pid" \
        -H "unix://$TMP/docker.sock" --iptables=false --ip-masq=false \
        --log-level info >"$TMP/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    export DOCKER_HOST=unix://$TMP/docker.sock
    local i
    for ((i = 0; i < 300; i++)); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$TMP/dockerd.log" >&2; die "dockerd exited"; }
        sleep 0.2
    done
    ((i < 300)) || { tail -n 20 "$TMP/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
    say "dockerd $DOCKERD_PID up ($("$DOCKER" version --format '{{.Server.Version}}'), socket $TMP/docker.sock)"
}

# ---------------------------------------------------------------- images

find_pitr() {
    PITR=${PITR_BIN:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/pitr}
    if [[ ! -x "$PITR" ]]; then
        [[ -z "${PITR_BIN:-}" ]] || die "PITR_BIN=$PITR_BIN is not an executable file"
        command -v cargo >/dev/null || PATH=$HOME/.cargo/bin:$PATH
        say "building pitr (cargo build -p pitr --bin pitr)"
        cargo build --quiet -p pitr --bin pitr || die "cargo build failed"
    fi
}

build_images() {
    local ctx=$TMP/ctx
    mkdir -p "$ctx/drill/compose" "$ctx/drill/sql" "$ctx/rgw"
    install -m 755 "$PITR" "$ctx/drill/pitr"
    cp docker/drill-workload.sh "$ctx/drill/"
    cp docker/compose/*.sh "$ctx/drill/compose/"
    cp -r sql/drill "$ctx/drill/sql/drill"
    cp tests/support/ceph-rgw.sh docker/ci/run-rgw.sh "$ctx/rgw/"
    "$DOCKER" build -q --pull=false -t pitr-drill:ci -f docker/ci/drill-prebuilt.Dockerfile "$ctx/drill" >/dev/null
    "$DOCKER" build -q --pull=false -t pitr-rgw:ci -f docker/ci/rgw.Dockerfile "$ctx/rgw" >/dev/null
    say "built pitr-drill:ci ($(basename "$PITR") $("$PITR" --version 2>/dev/null | head -n 1)) and pitr-rgw:ci"
}

# ---------------------------------------------------------------- main

ensure_packages
# The Debian engine's own client (another docker on PATH may be newer than it).
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=docker
if [[ -n "${COMPOSE:-}" ]]; then
    read -r -a COMPOSE_CMD <<<"$COMPOSE"
elif "$DOCKER" compose version >/dev/null 2>&1; then
    COMPOSE_CMD=("$DOCKER" compose)
else
    COMPOSE_CMD=(docker-compose)
fi
find_pitr
tarball=$(base_tarball)
start_dockerd
"$DOCKER" import - pitr-base:local <"$tarball" >/dev/null
say "imported $tarball as pitr-base:local"
build_images

say "running: ${COMPOSE_CMD[*]} -p $PROJECT -f docker/compose.yaml -f docker/compose.ci.yaml" \
    "up --no-build --abort-on-container-exit --exit-code-from drill"
rc=0
compose up --no-build --abort-on-container-exit --exit-code-from drill || rc=$?
if ((rc == 0)); then
    say "compose drill passed"
else
    say "compose drill FAILED: exit $rc"
fi
exit "$rc"
