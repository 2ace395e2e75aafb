#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need when it is missing (PostgreSQL,
# haproxy and nginx from the distribution's packages), builds once, then runs every test with cargo-nextest (or
# cargo test when nextest is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg_server() {
    command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

if ! have_pg_server || ! command -v psql >/dev/null 2>&1 || ! id postgres >/dev/null 2>&1; then
    echo "==> installing PostgreSQL (server binaries are needed by the tests)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "PostgreSQL is missing and this is not root: install the 'postgresql' package" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's own cluster is not used; tests start throwaway servers.
    apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
if [ "${#need[@]}" -gt 0 ]; then
    echo "==> installing ${need[*]} (the load-balancer tests run the real ones)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing ${need[*]} and this is not root: install them" >&2
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

echo "==> testing"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    cargo test --workspace --locked --no-fail-fast "$@"
fi
