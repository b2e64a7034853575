#!/bin/sh
# Idempotent set-up of a Debian 12 machine for development, the demo and the
# tests: Debian packages from image/packages.txt, then the venv in .venv.
# A second run only checks, so it is quick.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ "$(id -u)" != 0 ]; then
    echo "host-setup: run as root (it installs Debian packages)" >&2
    exit 1
fi

pkgs=$(grep -v '^#' image/packages.txt | tr '\n' ' ')
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "host-setup: installing Debian packages:$missing"
    apt-get update -qq
    # No daemons of their own: the lab and the appliance start what they need.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    rm -f /usr/sbin/policy-rc.d
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
echo "host-setup: ok"
