#!/usr/bin/env bash
# Debian packages the test suite needs: podman (with runc, as docs/CONTAINER_TESTS.md
# explains) and debootstrap for the container tests' stand-in base image, and
# chromium for the browser tests (Playwright drives it; it cannot download its own),
# redis-server and nginx for the replica tests (each test starts its own, as the
# calling user, on free ports; the daemons the packages start are stopped and disabled),
# openssl, which makes the TLS Redis test's throwaway CA and certificate, and
# prometheus for its promtool, which checks and unit-tests deploy/observability/alerts.yaml
# (Debian ships promtool only in the server's package; its daemon is stopped too).
# Node.js runs the JS client's tests, npm installs the AI SDK they test against;
# Debian's are used only where none is installed.
# Installs only what is missing; needs root (CI runs as root), or sudo.
set -euo pipefail
PACKAGES=(podman runc debootstrap uidmap golang-github-containernetworking-plugin-dnsname
    chromium redis-server nginx openssl prometheus)
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
# npm installs the JS tests' dependencies (tests/js/package-lock.json).
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages start system daemons (nginx on port 80, redis on 6379, prometheus on
# 9090) where an init system runs; the tests need none, so stop them and keep them
# from coming back.
for service in nginx redis-server prometheus; do
    case " ${missing[*]} " in *" $service "*) ;; *) continue ;; esac
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        $SUDO service "$service" stop >/dev/null 2>&1 || true
    fi
done
