#!/usr/bin/env bash
# Rootful podman's settings for the container test (tests/deploy/test_containers.py) and for the
# compose site, as docs/deploy.md ("What was measured here") names them: runc, cgroupfs and a
# file events log (these machines run no systemd), rlimits a container may set without
# CAP_SYS_RESOURCE, CNI networking (its dnsname plugin resolves compose's service names), and
# overlay storage (vfs copies a whole image at every container start).
# Written only where the file is absent: an administrator's own containers.conf or storage.conf
# is never changed (then see docs/deploy.md for the settings it needs).
# FEDGATE_CONTAINERS_CONF_DIR: another folder than /etc/containers (tests/deploy).
set -euo pipefail
conf_dir=${FEDGATE_CONTAINERS_CONF_DIR:-/etc/containers}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

write_if_absent() { # path, then the content on stdin
  if [ -e "$1" ]; then
    cat >/dev/null
    return
  fi
  echo "setup: writing $1 (podman's settings for fedgate's container test; docs/deploy.md)"
  as_root mkdir -p "$(dirname "$1")"
  as_root tee "$1" >/dev/null
}

write_if_absent "$conf_dir/containers.conf" <<'CONF'
# Written by fedgate's scripts/setup.d/50-containers.sh (docs/deploy.md): rootful podman
# without systemd, on a hybrid or v2 cgroup hierarchy.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
[network]
network_backend = "cni"
CONF

write_if_absent "$conf_dir/storage.conf" <<'CONF'
# Written by fedgate's scripts/setup.d/50-containers.sh (docs/deploy.md): overlay storage
# (vfs copies a whole image at every container start).
[storage]
driver = "overlay"
graphroot = "/var/lib/containers-overlay"
runroot = "/run/containers/storage"
CONF
