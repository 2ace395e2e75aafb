#!/usr/bin/env bash
# Builds the Debian packages cuttle-server, cuttle-tentacle and cuttle (the CLI) with dpkg-deb:
#
#   packaging/build-debs.sh OUT_DIR              # release binaries (cargo build --release)
#   packaging/build-debs.sh OUT_DIR BIN_DIR      # the binaries already in BIN_DIR
#
# CUTTLE_DEB_COMPRESSION picks dpkg-deb's compressor (xz, the default; gzip, zstd or none: the
# tests use gzip, their debug binaries are large and xz is slow).
#
# Each package holds its binary in /usr/bin and its systemd unit (deploy/systemd/, with /usr/bin
# paths); cuttle-server an environment file /etc/cuttle/cuttle.env (a conffile, mode 0600);
# the CLI its manual pages and shell completions. Installing makes the system users (cuttle,
# cuttle-script, cuttle-tentacle) and their directories (mode 0700); nothing starts until the
# operator enables the unit.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: packaging/build-debs.sh OUT_DIR [BIN_DIR]}
bins=${2:-}
if [ -z "$bins" ]; then
    cargo build --release --locked -p cuttle-server -p cuttle-tentacle -p cuttle-cli
    bins=target/release
fi
for b in cuttle-server cuttle-tentacle cuttle; do
    [ -x "$bins/$b" ] || { echo "no executable $bins/$b" >&2; exit 1; }
done
compress=(-Z"${CUTTLE_DEB_COMPRESSION:-xz}")
[ "${CUTTLE_DEB_COMPRESSION:-xz}" = gzip ] && compress+=(-z1)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A package's tree: DEBIAN/control from the arguments, then the caller fills it.
start() {
    local name=$1 depends=$2 description=$3
    local root="$work/$name"
    mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/$name"
    cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: Cuttle developers <cuttle@example.invalid>
Section: admin
Priority: optional
Depends: $depends
Homepage: https://example.invalid/cuttle
Description: $description
CONTROL
    install -m 0644 LICENSE "$root/usr/share/doc/$name/copyright"
    install -m 0644 README.md "$root/usr/share/doc/$name/README.md"
    echo "$root"
}

# The unit as shipped, pointing at /usr/bin.
unit() {
    local root=$1 name=$2
    install -d -m 0755 "$root/lib/systemd/system"
    sed 's#/usr/local/bin/#/usr/bin/#' "deploy/systemd/$name.service" \
        > "$root/lib/systemd/system/$name.service"
    chmod 0644 "$root/lib/systemd/system/$name.service"
}

# Maintainer scripts: the system user and its directory; systemd told of the unit.
scripts() {
    local root=$1 user=$2 home=$3 extra=${4:-}
    cat > "$root/DEBIAN/postinst" <<POSTINST
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    getent group $user >/dev/null || groupadd --system $user
    getent passwd $user >/dev/null || useradd --system --gid $user --home-dir $home \\
        --no-create-home --shell /usr/sbin/nologin $user
    install -d -m 0700 -o $user -g $user $home
$extra
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
POSTINST
    cat > "$root/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
    systemctl stop ${root##*/}.service || true
fi
PRERM
    cat > "$root/DEBIAN/postrm" <<POSTRM
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
# The data stays on purge: the cluster's keys and logs are not ours to delete.
POSTRM
    chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
}

# cuttle-server
root=$(start cuttle-server "libc6, bubblewrap, passwd" \
"Cuttle deployment server node
 One node of a Cuttle cluster: REST and gRPC APIs, scheduler, worker and tentacle
 gateway, on SQLite, PostgreSQL or SQL Server.")
install -m 0755 "$bins/cuttle-server" "$root/usr/bin/cuttle-server"
unit "$root" cuttle-server
install -d -m 0755 "$root/etc/cuttle"
cat > "$root/etc/cuttle/cuttle.env" <<'ENV'
# /etc/cuttle/cuttle.env: this node's settings (docs/configuration.md); mode 0600, it holds
# secrets. Unset, the node runs alone on SQLite in /var/lib/cuttle, listening on 127.0.0.1:8080,
# and writes its first admin API key to /var/lib/cuttle/admin-api-key. For a cluster, set at
# least these, the same database and master key on every node:
# CUTTLE_DATABASE_URL=postgres://cuttle:CHANGE-ME@db.internal:5432/cuttle
# (systemd reads a line whole: keep comments on lines of their own.)
# The master key: openssl rand 16 | base64
# CUTTLE_MASTER_KEY=
# CUTTLE_NODE_NAME=node1
# CUTTLE_HTTP_LISTEN=0.0.0.0:8080
# CUTTLE_GRPC_LISTEN=10.0.0.11:8443
# Under /srv/cuttle, which the unit's sandbox lets the node write (or add a ReadWritePaths=):
# CUTTLE_SHARED_PATH=/srv/cuttle/shared
# Traces to an OpenTelemetry collector (docs/operations.md#traces):
# OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318
CUTTLE_LOG_FORMAT=json
# The unit sets it too; here so that commands run by hand (backup, restore, check) with
# `set -a; . /etc/cuttle/cuttle.env` find the node's data directory.
CUTTLE_DATA_DIR=/var/lib/cuttle
ENV
chmod 0600 "$root/etc/cuttle/cuttle.env"
echo /etc/cuttle/cuttle.env > "$root/DEBIAN/conffiles"
scripts "$root" cuttle /var/lib/cuttle "$(cat <<'EXTRA'
    # Scripts on the node run as this user, in a bubblewrap sandbox.
    getent group cuttle-script >/dev/null || groupadd --system cuttle-script
    getent passwd cuttle-script >/dev/null || useradd --system --gid cuttle-script \
        --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin cuttle-script
EXTRA
)"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$out/cuttle-server_${version}_${arch}.deb"

# cuttle-tentacle
root=$(start cuttle-tentacle "libc6, passwd" \
"Cuttle deployment agent (tentacle)
 Runs what a Cuttle cluster sends a deployment target: scripts, files and packages,
 over mutual TLS, polling the cluster or listening.")
install -m 0755 "$bins/cuttle-tentacle" "$root/usr/bin/cuttle-tentacle"
unit "$root" cuttle-tentacle
scripts "$root" cuttle-tentacle /var/lib/cuttle-tentacle
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$out/cuttle-tentacle_${version}_${arch}.deb"

# cuttle (the CLI): manual pages and completions made by the binary itself.
root=$(start cuttle "libc6" \
"Cuttle command-line client
 Makes, changes, lists and removes every object of a Cuttle cluster by name, deploys,
 and follows task logs.")
install -m 0755 "$bins/cuttle" "$root/usr/bin/cuttle"
install -d -m 0755 "$root/usr/share/man/man1" "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$bins/cuttle" man --dir "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1
"$bins/cuttle" completions bash > "$root/usr/share/bash-completion/completions/cuttle"
"$bins/cuttle" completions zsh > "$root/usr/share/zsh/vendor-completions/_cuttle"
"$bins/cuttle" completions fish > "$root/usr/share/fish/vendor_completions.d/cuttle.fish"
find "$root/usr/share" -type f -exec chmod 0644 {} +
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$out/cuttle_${version}_${arch}.deb"
ls "$out"/*.deb
