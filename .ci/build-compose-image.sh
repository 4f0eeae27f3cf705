#!/usr/bin/env bash
# Build the image of docker-compose.test.yml's nodes without any registry:
#   a Debian rootfs from the package archive (mmdebstrap: python3, iproute2, procps),
#   swarmlet and its Python dependencies installed into /opt/swarmlet by this machine's
#   pip (same Python minor version as Debian bookworm's python3: 3.11),
#   the node entrypoint (compose-test/node.sh), then `docker import`.
#
#   .ci/build-compose-image.sh            build swarmlet-compose-test:local unless it is there and was
#                                         built from the same sources (label swarmlet.source)
#   .ci/build-compose-image.sh --force    build it again
#
# Needs root, docker, mmdebstrap (Debian package) and network access to the Debian
# archive and to the Python package index that pip is configured with.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${SWARMLET_COMPOSE_IMAGE:-swarmlet-compose-test:local}"
SUITE="${SWARMLET_COMPOSE_SUITE:-bookworm}"
MIRROR="${SWARMLET_COMPOSE_MIRROR:-http://deb.debian.org/debian}"
log() { echo "build-compose-image: $*"; }

# The sources baked into the image: a changed file means a new image.
SOURCE="$(find swarmlet compose-test pyproject.toml -type f \( -name '*.py' -o -name '*.sh' -o -name '*.toml' \) \
          -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
built_from="$(docker image inspect -f '{{ index .Config.Labels "swarmlet.source" }}' "$IMAGE" 2>/dev/null || true)"
if [ "${1:-}" != "--force" ] && [ "$built_from" = "$SOURCE" ]; then
    log "$IMAGE is up to date (sources $SOURCE; --force to rebuild)"
    exit 0
fi
command -v mmdebstrap >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update; apt-get install -y --no-install-recommends mmdebstrap; }

old_id="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
work="$(mktemp -d /tmp/swc-image-XXXXXX)"
trap 'rm -rf "$work"' EXIT
started=$(date +%s)
log "Debian $SUITE rootfs (mmdebstrap minbase + python3 iproute2 procps)"
mmdebstrap --quiet --variant=minbase --include=python3,iproute2,procps,ca-certificates "$SUITE" "$work/root" "$MIRROR"
log "swarmlet and its dependencies into /opt/swarmlet"
python3 -m pip install --quiet --disable-pip-version-check --no-compile --target "$work/root/opt/swarmlet" . 2>&1 \
    | grep -v "is neither a file nor a directory\|Running pip as the 'root' user" || true
install -m 0755 compose-test/node.sh "$work/root/usr/local/bin/swarmlet-compose-node"
rm -rf "$work/root/var/cache/apt" "$work/root/var/lib/apt/lists" "$work/root/usr/share/doc" "$work/root/usr/share/man"
log "docker import $IMAGE"
tar -C "$work/root" -c . | docker import \
    --change 'ENV PYTHONPATH=/opt/swarmlet PATH=/opt/swarmlet/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin' \
    --change 'ENTRYPOINT ["/usr/local/bin/swarmlet-compose-node"]' \
    --change "LABEL swarmlet.source=$SOURCE" - "$IMAGE" >/dev/null
old_id="${old_id:-}"
[ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ] && docker rmi "$old_id" >/dev/null 2>&1 || true
log "built $IMAGE in $(( $(date +%s) - started )) s"
