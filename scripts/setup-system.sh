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
elif command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
    SUDO="sudo"  # asks for the password when there is a terminal to ask on
else
    echo "render setup: missing system packages: ${missing[*]}" >&2
    echo "render setup: install them as root: apt-get install -y ${missing[*]}" >&2
    case "${CI:-}" in
        1|true|TRUE|True|yes) exit 1 ;;  # under CI the tests need them: stop here
    esac
    echo "render setup: (browser and nginx tests are skipped until then, outside CI)" >&2
    exit 0
fi
echo "render setup: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
# slim Debian images drop /usr/share/man; the JRE's update-alternatives needs man1
$SUDO mkdir -p /usr/share/man/man1
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
