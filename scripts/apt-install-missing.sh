#!/usr/bin/env bash
# Install Debian packages for tools that are missing, the way the Makefile's tool targets
# do: with apt-get only as root and only when a tool is missing; a policy-rc.d (exit 101)
# keeps postinst scripts from starting daemons, and one that exists is left alone. Never
# fails: without the tools it prints the install command and what happens without them.
#
#   scripts/apt-install-missing.sh <label> "<tools>" "<packages>" "<without them>"
#   scripts/apt-install-missing.sh image-tools "buildah debootstrap" "buildah debootstrap" \
#       "Image tests will skip."
set -u
label=$1 tools=$2 packages=$3 without=$4

missing=
for tool in $tools; do
	command -v "$tool" >/dev/null || missing=1
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	echo "$label: installing Debian $packages"
	made_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		made_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086 # the package list is meant to split
	apt-get update -qq -o DPkg::Lock::Timeout=300 >/dev/null \
		&& apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
			$packages >/dev/null 2>&1 \
		|| echo "$label: apt-get failed. $without"
	if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
else
	echo "$label: $tools not found. Install them with:"
	echo "  sudo apt-get install --no-install-recommends $packages"
	echo "$without"
fi
exit 0
