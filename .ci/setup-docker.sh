#!/usr/bin/env bash
# Prepare a Docker engine for swarmlet's tests, as root, on a clean Debian-like machine.
#
#   .ci/setup-docker.sh               install packages if missing, start dockerd, build the test image
#   .ci/setup-docker.sh --image-only  only build the test image (the engine must already answer);
#                                     this is what the pytest fixtures call on a developer's machine
#
# Idempotent: every step checks first and skips what is already done.
# No registry is reachable from CI, so the test image is imported from a local busybox rootfs.
set -euo pipefail

TEST_IMAGE="${SWARMLET_TEST_IMAGE:-swarmlet-test/busybox:1}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKER_WAIT_SECONDS="${DOCKER_WAIT_SECONDS:-60}"
# Applets linked into the image; `busybox --install` is avoided because it wants /proc.
APPLETS="sh ash ls cat echo printf sleep httpd wget nc hostname env kill true false test [ grep
ps id touch mkdir rm date head tail tr wc dd sed awk seq yes sort uniq cut find stat chmod chown
cp mv ln mount df du free uname whoami pwd readlink realpath basename dirname expr timeout top
nslookup ping ip ifconfig netstat xargs tee md5sum sha256sum base64 od hexdump pidof killall"

log() { echo "setup-docker: $*"; }

engine_answers() { docker info >/dev/null 2>&1; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    [ -x /bin/busybox ] || missing+=(busybox-static)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    # The overlay data plane (tests/network/): nft rulesets, conntrack flushes, ip/bridge.
    command -v nft >/dev/null 2>&1 || missing+=(nftables)
    command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
    # libnftables' Python binding: the agents apply rulesets in-process with it (network/netfilter.py).
    [ -f /usr/lib/python3/dist-packages/nftables/nftables.py ] || missing+=(python3-nftables)
    # `local up --isolated`: network namespaces, veths, a bridge (ip, bridge), nodes inside them (nsenter).
    { command -v ip >/dev/null 2>&1 && command -v bridge >/dev/null 2>&1; } || missing+=(iproute2)
    command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages already installed (docker.io, busybox-static, iptables, nftables, python3-nftables, conntrack, iproute2, util-linux)"
        return
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
}

start_engine() {
    if engine_answers; then
        log "docker engine already answers"
        return
    fi
    log "starting dockerd in the background (log: $DOCKERD_LOG)"
    setsid dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
    local deadline=$((SECONDS + DOCKER_WAIT_SECONDS))
    until engine_answers; do
        if [ $SECONDS -ge $deadline ]; then
            log "dockerd did not answer within ${DOCKER_WAIT_SECONDS}s; last lines of its log:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "docker engine answers: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
}

build_test_image() {
    if docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
        log "image $TEST_IMAGE already present"
        return
    fi
    local busybox
    busybox="$(command -v busybox || true)"
    [ -n "$busybox" ] || busybox=/bin/busybox
    [ -x "$busybox" ] || { log "busybox not found; install busybox-static" >&2; exit 1; }
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    local root="$rootfs"
    log "building $TEST_IMAGE from $busybox"
    mkdir -p "$root/bin" "$root/etc" "$root/run" "$root/tmp" "$root/root" "$root/var/www" "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    local applet
    for applet in $APPLETS; do
        ln -sf busybox "$root/bin/$applet"
    done
    # Enough identity files for `user:` settings and `id` to resolve names.
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/bin' \
        --change 'CMD ["sh"]' \
        --message "swarmlet test image (busybox)" \
        - "$TEST_IMAGE" >/dev/null
    rm -rf "$rootfs"
    log "built $TEST_IMAGE"
}

case "${1:-}" in
    --image-only)
        engine_answers || { log "no docker engine answers; start one first (or run without --image-only)" >&2; exit 1; }
        build_test_image
        ;;
    "")
        install_packages
        start_engine
        build_test_image
        ;;
    *)
        echo "usage: $0 [--image-only]" >&2
        exit 2
        ;;
esac
