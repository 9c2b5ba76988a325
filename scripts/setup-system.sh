#!/usr/bin/env bash
# Installs the system packages render's checks and tests use (Debian's chromium,
# nginx and a Java runtime for the HTML checker), when they are missing.
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO="sudo"
else
    echo "render setup: missing system packages: ${missing[*]}" >&2
    echo "render setup: install them as root: apt-get install -y ${missing[*]}" >&2
    echo "render setup: (browser and nginx tests are skipped until then, outside CI)" >&2
    exit 0
fi
echo "render setup: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
