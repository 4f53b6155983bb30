#!/usr/bin/env bash
# Install Debian packages without letting them start system services.
# Usage: scripts/apt_install.sh PACKAGE...
set -euo pipefail
apt-get update -qq
# A policy-rc.d that refuses every start keeps a package (Orthanc, say) from
# starting its service while it installs; removed again if we made it.
policy=/usr/sbin/policy-rc.d
made_policy=false
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=true
fi
trap 'if $made_policy; then rm -f "$policy"; fi' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
