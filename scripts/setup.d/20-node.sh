#!/usr/bin/env bash
# npm packages for the viewer and interoperability tests (issue 3), into the git-ignored
# .cache/node. Installs only what is missing; quiet when everything is there.
# - OHIF Viewer 3.13.x: only its package tarball, which carries the prebuilt dist/ (about 50 MB);
#   its npm dependencies are the sources dist/ was built from and are not needed to serve it.
# - dcmjs: a third-party TID 1500 writer, run by Node in the reader's interoperability test.
set -euo pipefail
cd "$(dirname "$0")/../.."
prefix=.cache/node
ohif_version="3.13.x"
# The version the reader test is written against (its Cornerstone adapter writes TID 1500).
dcmjs_version="0.51.x"
if [ ! -f "$prefix/ohif/dist/index.html" ] || [ ! -f "$prefix/node_modules/dcmjs/package.json" ]; then
  command -v npm >/dev/null || { echo "setup: npm is missing (Debian package npm)" >&2; exit 1; }
  mkdir -p "$prefix"
fi
if [ ! -f "$prefix/ohif/dist/index.html" ]; then
  echo "setup: fetching the prebuilt OHIF Viewer (@ohif/app@$ohif_version) into $prefix/ohif"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  tarball=$(cd "$tmp" && npm pack --silent "@ohif/app@$ohif_version" 2>"$tmp/npm.log" | tail -n 1)
  if [ -z "$tarball" ] || [ ! -f "$tmp/$tarball" ]; then
    echo "setup: npm pack @ohif/app@$ohif_version failed:" >&2
    cat "$tmp/npm.log" >&2
    exit 1
  fi
  mkdir -p "$tmp/unpacked"
  tar -xzf "$tmp/$tarball" -C "$tmp/unpacked"
  rm -rf "$prefix/ohif"
  mv "$tmp/unpacked/package" "$prefix/ohif"
fi
if [ ! -f "$prefix/node_modules/dcmjs/package.json" ]; then
  echo "setup: installing dcmjs into $prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "dcmjs@$dcmjs_version" >/dev/null
fi
