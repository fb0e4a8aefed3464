#!/usr/bin/env bash
# Builds the stand-in for python:3.12-slim that container tests use where no
# registry can be reached (see docs/CONTAINER_TESTS.md), and imports it into podman
# as localhost/python-base:test. The root filesystem is cached as a tarball, so
# only the first run pays for debootstrap.
set -euo pipefail
IMAGE=localhost/python-base:test
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/qa-service"
TARBALL="$CACHE/python-base-bookworm.tar"
F=(--runtime /usr/sbin/runc)

if podman "${F[@]}" image exists "$IMAGE"; then
    exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    ROOTFS=$(mktemp -d)
    trap 'rm -rf "$ROOTFS"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$ROOTFS" >/dev/null
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
    tar -C "$ROOTFS" -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
fi
podman "${F[@]}" import --change 'CMD ["python3"]' "$TARBALL" "$IMAGE" >/dev/null
