#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need when it is missing (PostgreSQL,
# haproxy, nginx, Prometheus' promtool, Chromium and its WebDriver, bubblewrap, curl, jq,
# openssl, iproute2 and Python's venv from the distribution's packages, the Python packages of the gRPC client and
# OpenAPI fuzzing tests from PyPI, and the user scripts on a node run as), builds once,
# then runs every test with cargo-nextest (or cargo test when nextest is not installed), the
# SQL Server variants too when CUTTLE_TEST_MSSQL_URL is set.
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
# /metrics and the shipped alert rules are checked with Prometheus' own promtool (the package
# without its recommended exporters).
bare=()
command -v promtool >/dev/null 2>&1 || bare+=(prometheus)
# The web UI's browser test drives a headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Scripts on a node run isolated: in a bubblewrap sandbox, as a user of their own.
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
# The docs' walk-throughs run as written (curl, jq, openssl) on hosts of their own (network
# namespaces: ip; their own host names and mounts: unshare).
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# The public gRPC API's second implementation is a Python client (its packages from PyPI into a
# virtual environment of the tests' own).
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)

if [ "$(( ${#need[@]} + ${#bare[@]} ))" -gt 0 ]; then
    echo "==> installing ${need[*]} ${bare[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing ${need[*]} ${bare[*]} and this is not root: install these packages" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if [ "${#need[@]}" -gt 0 ]; then
        apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    if [ "${#bare[@]}" -gt 0 ]; then
        apt-get install -y -qq --no-install-recommends "${bare[@]}" >/dev/null
    fi
fi

if ! id cuttle-script >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts on a node run as the user cuttle-script, which does not exist and this is" \
            "not root: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin" \
            "cuttle-script" >&2
        exit 1
    fi
    echo "==> creating the user cuttle-script (scripts on a node run as it)"
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin cuttle-script
fi

# In CI every test runs: a missing SQL Server is a failure there, not a skip.
if [ -z "${CUTTLE_TEST_MSSQL_URL:-}" ] && [ "${CI:-}" = "true" ]; then
    echo "CI=true but CUTTLE_TEST_MSSQL_URL is not set: the SQL Server tests would be skipped." \
        "Point it at a SQL Server or Babelfish login that may create databases" \
        "(docs/sql-server.md#testing)" >&2
    exit 1
fi

# The Python the tests run (the gRPC client, schemathesis), made again when its requirements
# change.
py_env="$PWD/target/test-python"
py_stamp="$py_env/requirements.sha256"
py_want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x "$py_env/bin/python" ] || [ "$(cat "$py_stamp" 2>/dev/null)" != "$py_want" ]; then
    echo "==> making the tests' Python environment (tests/requirements.txt)"
    rm -rf "$py_env"
    python3 -m venv "$py_env"
    "$py_env/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
    echo "$py_want" > "$py_stamp"
fi
export CUTTLE_TEST_PYTHON="$py_env/bin/python"

echo "==> building"
cargo build --workspace --all-targets --locked
export CUTTLE_SERVER_BIN="$PWD/target/debug/cuttle-server"
export CUTTLE_CLI_BIN="$PWD/target/debug/cuttle"
export CUTTLE_TENTACLE_BIN="$PWD/target/debug/cuttle-tentacle"

echo "==> testing"
# The SQL Server variants of the tests are ignored unless CUTTLE_TEST_MSSQL_URL names a server
# (SQL Server 2016+ or Babelfish; a login that may create databases). Its two outage tests stop
# and start that server (CUTTLE_TEST_MSSQL_STOP / _START), so they run first, alone: every
# other SQL Server test shares the server.
mssql_outage='binary(outage) & test(/^sqlserver_/)'
if ! cargo nextest --version >/dev/null 2>&1; then
    if [ -n "${CUTTLE_TEST_MSSQL_URL:-}" ]; then
        echo "==> the SQL Server tests need cargo-nextest (cargo install cargo-nextest)" >&2
        exit 1
    fi
    exec cargo test --workspace --locked --no-fail-fast "$@"
fi
status=0
if [ -n "${CUTTLE_TEST_MSSQL_URL:-}" ]; then
    if [ -n "${CUTTLE_TEST_MSSQL_STOP:-}" ] && [ -n "${CUTTLE_TEST_MSSQL_START:-}" ]; then
        echo "==> SQL Server outage tests (they stop and start the server: alone)"
        # Without the caller's arguments: a --test-threads among them would clash with ours.
        cargo nextest run --workspace --locked --no-fail-fast --run-ignored only \
            -E "$mssql_outage" --test-threads 1 || status=$?
    elif [ "${CI:-}" = "true" ]; then
        echo "CI=true but CUTTLE_TEST_MSSQL_STOP / CUTTLE_TEST_MSSQL_START are not set: the 2" \
            "SQL Server outage tests would be skipped" >&2
        status=1
    else
        echo "==> skipping the 2 SQL Server outage tests: set CUTTLE_TEST_MSSQL_STOP and" \
            "CUTTLE_TEST_MSSQL_START to shell commands that stop and start the server"
    fi
    echo "==> every other test, SQL Server included"
    cargo nextest run --workspace --locked --no-fail-fast --run-ignored all \
        -E "not ($mssql_outage)" "$@" || status=$?
else
    cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?
    skipped=$(cargo nextest list --workspace --locked --run-ignored only \
        --message-format oneline 2>/dev/null | grep -c . || true)
    echo "==> skipped $skipped SQL Server tests: set CUTTLE_TEST_MSSQL_URL=mssql://LOGIN:PASSWORD@HOST:1433/master?trust_server_certificate=true" \
        "(a SQL Server or Babelfish login that may create databases) to run them; see docs/sql-server.md"
fi
# Every test's servers end with it, however it ends: nothing a test started may outlive the run.
leftovers() {
    local tmp="${TMPDIR:-/tmp}"
    tmp="${tmp%/}"
    ps -eo pid=,args= | grep -E -e "$PWD/target/debug/cuttle" -e "$tmp/cuttle-" \
        -e 'chromedriver' -e ' sleep 600(\.[0-9]+)?$' | grep -v -e 'grep -E' || true
    # Orphans: a balancer's worker whose master was killed, a script's child whose node or
    # tentacle did not take it along.
    ps -eo pid=,ppid=,args= |
        awk '$2 == 1 && ($3 ~ /^nginx:/ || $3 ~ /haproxy$/ || $3 == "sleep")' || true
    ip netns list 2>/dev/null | grep -E '^cuttle-' || true
}
left=$(leftovers)
if [ -n "$left" ]; then
    sleep 2 # processes still being reaped as the last tests ended
    left=$(leftovers)
fi
if [ -n "$left" ]; then
    echo "==> test processes outlived the run (a test's clean-up is missing):" >&2
    echo "$left" >&2
    status=1
fi
exit "$status"
