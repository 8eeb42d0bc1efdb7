#!/usr/bin/env bash
# Install Debian packages for the local stack and tests, if we may and they are missing.
#
#   scripts/install_debian_packages.sh NAME BINARY PACKAGE...
#
# Does nothing when BINARY is on PATH. As root with apt-get, installs PACKAGE...; a
# policy-rc.d that exits 101 stops their postinst from starting system daemons that
# would hold the ports the stack uses (an existing policy-rc.d is left alone). As any
# other user, prints the command to run. Never fails: the tests that need the binary
# skip, and `make up` starts the rest of the stack.
set -u
name=$1 binary=$2
shift 2
command -v "$binary" >/dev/null && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "$name: $binary not found. Install it with:"
    echo "  sudo apt-get install --no-install-recommends $*"
    echo "The tests that need it will skip; make up starts the stack without it."
    exit 0
fi
echo "$name: installing Debian $*"
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null \
    && apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null \
    || echo "$name: apt-get failed; the tests that need $binary will skip"
if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
exit 0
