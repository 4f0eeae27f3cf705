#!/bin/sh
# The entrypoint of a docker-compose.test.yml node (built into the image by
# .ci/build-compose-image.sh). First start: init (SWARMLET_ROLE=init) or join through
# the real token path (tokens handed over in the shared /tokens volume), then the node
# runs in the foreground as PID 1. Later starts (after `docker kill` + `docker start`):
# the node runs again from its data dir.
set -eu
DATA=/var/lib/swarmlet
PORT=2377
ADDR="${SWARMLET_ADDR:?set SWARMLET_ADDR to this node's address}"
NAME="${SWARMLET_NAME:-$(hostname)}"
run() { python3 -m swarmlet.cli.main "$@"; }
wait_for() { n=0; while [ ! -s "$1" ]; do n=$((n + 1)); [ "$n" -gt 1200 ] && { echo "no $1 after 120 s" >&2; exit 1; }; sleep 0.1; done; }
foreground() {
    # The node runs detached (so that tokens could be handed out after init); this shell
    # stays PID 1 while it lives, passes on `docker stop`, and its death (`docker kill`)
    # takes every process of the container with it.
    pid="$(cat "$DATA/node.pid")"
    trap 'kill -TERM "$pid"' TERM INT
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}

if [ -f "$DATA/node.json" ]; then
    run agent --data-dir "$DATA" --detach
    foreground
    exit 0
fi
case "${SWARMLET_ROLE:?init, manager or worker}" in
init)
    run init --advertise-addr "$ADDR:$PORT" --data-dir "$DATA" --hostname "$NAME" --runtime process \
        --heartbeat-period "${SWARMLET_HEARTBEAT:-0.5}" --detach
    for role in manager worker; do
        run join-token "$role" -q --host "$ADDR:$PORT" --context "$DATA/admin" > "/tokens/$role.tmp"
        mv "/tokens/$role.tmp" "/tokens/$role"
    done
    foreground
    ;;
manager | worker)
    wait_for "/tokens/$SWARMLET_ROLE"
    [ -n "${SWARMLET_AFTER:-}" ] && wait_for "/tokens/joined-$SWARMLET_AFTER"
    run join --token "$(cat "/tokens/$SWARMLET_ROLE")" "${SWARMLET_JOIN:?the first manager's address}:$PORT" \
        --advertise-addr "$ADDR:$PORT" --data-dir "$DATA" --hostname "$NAME" --runtime process --detach
    echo "$NAME" > "/tokens/joined-$NAME"
    foreground
    ;;
*)
    echo "SWARMLET_ROLE must be init, manager or worker" >&2
    exit 2
    ;;
esac
