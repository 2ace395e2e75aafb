#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need when it is missing (PostgreSQL,
# haproxy and nginx, from the distribution's packages), builds once, then runs every test with
# cargo-nextest (or cargo test when nextest is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# PostgreSQL server binaries and the postgres user (the tests start throwaway servers as it).
if ! { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
    || ! id postgres >/dev/null 2>&1; then
    need+=(postgresql)
fi
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
# The load-balancer tests run the real haproxy and check the nginx config with nginx itself.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)

if [ "${#need[@]}" -gt 0 ]; then
    echo "==> installing ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing ${need[*]} and this is not root: install these packages" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "==> building"
cargo build --workspace --all-targets --locked
export CUTTLE_SERVER_BIN="$PWD/target/debug/cuttle-server"
export CUTTLE_CLI_BIN="$PWD/target/debug/cuttle"
export CUTTLE_TENTACLE_BIN="$PWD/target/debug/cuttle-tentacle"

echo "==> testing"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
