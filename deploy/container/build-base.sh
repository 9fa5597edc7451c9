#!/usr/bin/env bash
# Builds fedgate's container base image from Debian packages, without pulling any image:
# mmdebstrap (Debian package mmdebstrap) writes a minimal Debian 12 "bookworm" root file system
# with Python 3.11 into a tarball, and `podman import` (or `docker import`) turns it into the
# image that deploy/container/Dockerfile starts FROM (build argument BASE_IMAGE).
#
#   deploy/container/build-base.sh                    # -> localhost/fedgate-base:bookworm
#   deploy/container/build-base.sh --engine docker --tag registry.example/fedgate-base:bookworm
#   deploy/container/build-base.sh --mirror http://apt-cache.hospital.example/debian
#
# Run as root (mmdebstrap's default "root" mode; "unshare" mode works as a user with subuids:
# --mode unshare). About 30 s and 225 MB with a nearby mirror.
set -euo pipefail

engine=podman
tag=localhost/fedgate-base:bookworm
mirror=http://deb.debian.org/debian
mode=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-base.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
command -v mmdebstrap >/dev/null || { echo "build-base.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
command -v "$engine" >/dev/null || { echo "build-base.sh: $engine is missing" >&2; exit 1; }
# A podman here may need its own storage/runtime options (see docs/deploy.md); they pass through.
read -r -a engine_options <<<"${FEDGATE_ENGINE_OPTIONS:-}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# minbase: essential packages plus apt; python3-venv so the images' virtual environment needs
# no pip from Debian; ca-certificates for HTTPS to PyPI and to the PACS; the apt lists and
# caches are left out of the image (--skip: apt's lists are fetched again by stages that
# install Debian packages).
mmdebstrap --mode="$mode" --variant=minbase \
  --include=python3,python3-venv,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$work/rootfs.tar" "$mirror"
"$engine" "${engine_options[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$work/rootfs.tar" "$tag"
echo "build-base.sh: built $tag"
