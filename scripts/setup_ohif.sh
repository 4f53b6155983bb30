#!/usr/bin/env bash
# What the browser tests (tests/test_ohif_viewer.py) need, installed when
# missing; a no-op when everything is present:
#   - Debian's chromium at /usr/bin/chromium (playwright drives it; it never
#     downloads a browser of its own);
#   - the prebuilt OHIF viewer, the npm package @ohif/app, unpacked into
#     .cache/ohif/VERSION/ (git-ignored); the tests serve its package/dist/.
# PyPI playwright comes with the test extras (pip install -e '.[test]').
# METASTORE_OHIF_DIST overrides where the tests look for dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
OHIF_VERSION=3.13.2
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if ! [ -x /usr/bin/chromium ]; then
    bash scripts/apt_install.sh chromium
fi

dest=.cache/ohif/$OHIF_VERSION
if ! [ -f "$dest/package/dist/index.html" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null)
    tar -xzf "$work"/ohif-app-"$OHIF_VERSION".tgz -C "$work"
    mkdir -p "$dest"
    rm -rf "$dest/package"
    # Unpacked aside and moved in whole: an interrupted run leaves no half tree.
    mv "$work/package" "$dest/package"
    echo "OHIF $OHIF_VERSION unpacked into $dest/package"
fi
