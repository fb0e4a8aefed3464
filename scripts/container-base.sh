#!/usr/bin/env bash
# Builds the stand-in for python:3.11-slim that container tests use where no
# registry can be reached (see docs/CONTAINER_TESTS.md), and imports it into podman
# as localhost/python-base:bookworm. Debian bookworm's python3 is 3.11, the Python
# the Dockerfile ships (trixie's is 3.13). The root filesystem is cached as a
# tarball named by the suite, so only the first run pays for debootstrap, and a
# tarball or an image of another suite is never taken for this one.
set -euo pipefail
SUITE=bookworm
IMAGE=localhost/python-base:$SUITE
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/qa-service"
TARBALL="$CACHE/python-base-$SUITE.tar"
F=(--runtime /usr/sbin/runc)

if podman "${F[@]}" image exists "$IMAGE"; then
    exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    ROOTFS=$(mktemp -d)
    trap 'rm -rf "$ROOTFS"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$ROOTFS" >/dev/null
    cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    rm -f "$ROOTFS"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
    tar -C "$ROOTFS" -cf "$TARBALL.partial" .
    mv "$TARBALL.partial" "$TARBALL"
fi
podman "${F[@]}" import --change 'CMD ["python3"]' "$TARBALL" "$IMAGE" >/dev/null
