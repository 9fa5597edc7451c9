#!/usr/bin/env bash
# npm packages for the cohort dashboard at /ui (issue 15), served by the gateway and the hub:
# - Vega 6, Vega-Lite 6 and vega-embed 7: the declarative chart library the dashboard draws
#   with; their prebuilt browser builds (build/*.min.js, no bundler needed) are copied into the
#   git-ignored dashboard/static/vendor, which the app serves at /ui/static/vendor/.
# - axe-core 4: the accessibility checker the dashboard's browser tests inject (tests only),
#   copied into the git-ignored tests/ui/vendor.
# Only the package tarballs are fetched (npm pack): the browser builds need no dependencies.
# Installs only what is missing or of another version; quiet when everything is there.
set -euo pipefail
cd "$(dirname "$0")/../.."
vendor=dashboard/static/vendor
test_vendor=tests/ui/vendor
# Versions the dashboard is written against (Vega-Lite 6 specs, vega-embed 7's API).
packages=(vega@6.4.0 vega-lite@6.4.3 vega-embed@7.3.0 axe-core@4.14.1)
stamp="$vendor/VERSIONS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${packages[*]}" ] && [ -f "$test_vendor/axe.min.js" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "setup: npm is missing (Debian package npm)" >&2; exit 1; }
echo "setup: fetching the dashboard's chart library (${packages[*]})"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "${packages[@]}" >"$tmp/packed.txt" 2>"$tmp/npm.log") || {
  echo "setup: npm pack ${packages[*]} failed:" >&2
  cat "$tmp/npm.log" >&2
  exit 1
}
for package in "${packages[@]}"; do
  name=${package%@*}
  mkdir -p "$tmp/$name"
  tar -xzf "$tmp/$name-${package##*@}.tgz" -C "$tmp/$name"
done
mkdir -p "$vendor" "$test_vendor"
cp "$tmp/vega/package/build/vega.min.js" "$vendor/vega.min.js"
cp "$tmp/vega-lite/package/build/vega-lite.min.js" "$vendor/vega-lite.min.js"
cp "$tmp/vega-embed/package/build/vega-embed.min.js" "$vendor/vega-embed.min.js"
for name in vega vega-lite vega-embed; do
  cp "$tmp/$name/package/LICENSE" "$vendor/LICENSE.$name" 2>/dev/null || true
done
cp "$tmp/axe-core/package/axe.min.js" "$test_vendor/axe.min.js"
echo "${packages[*]}" >"$stamp"
