"""What `swarmlet local up --runtime docker` needs from this machine's Docker engine,
checked before any node starts: an engine that answers (else a clear refusal naming
the way out, `--runtime process`), and the examples' image `swarmlet-test/busybox:1`.

The image is made here when the engine lacks it, as `.ci/setup-docker.sh` does (no
registry needed): a root filesystem holding this machine's static busybox and its
applets, imported into the engine. Without a static busybox here, `up` says what to
install; the cluster starts anyway (stacks with other images still run).
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

EXAMPLE_IMAGE = "swarmlet-test/busybox:1"
ENGINE_TIMEOUT = 5.0  # seconds: a local engine answers at once, or not at all
# The applets linked into the image (the same list as .ci/setup-docker.sh).
APPLETS = ("sh ash ls cat echo printf sleep httpd wget nc hostname env kill true false test [ grep ps id touch mkdir "
           "rm date head tail tr wc dd sed awk seq yes sort uniq cut find stat chmod chown cp mv ln mount df du free "
           "uname whoami pwd readlink realpath basename dirname expr timeout top nslookup ping ip ifconfig netstat "
           "xargs tee md5sum sha256sum base64 od hexdump pidof killall").split()
NO_ENGINE_HELP = ("Start one (Debian: `apt install docker.io`), or run the tasks as processes on this machine, no "
                  "engine needed:\n\n    swarmlet local up --runtime process && eval \"$(swarmlet local env)\" && "
                  "swarmlet stack deploy -c compose-examples/hello-process/compose.yml hello\n")


class EngineUnavailable(Exception):
    pass


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect():
    """A docker SDK client for an engine that answers, or ``EngineUnavailable`` saying
    what to do instead."""
    import docker

    try:
        client = docker.from_env(version="auto", timeout=ENGINE_TIMEOUT)
        client.ping()
        return client
    except Exception as err:  # no socket, permission denied, engine down, …
        raise EngineUnavailable(f"no Docker engine answers at {engine_address()} ({type(err).__name__}: {err}).\n"
                                + NO_ENGINE_HELP) from None


def static_busybox() -> Path | None:
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.access(candidate, os.X_OK) and _is_static(Path(candidate)):
            return Path(candidate)
    return None


def _is_static(path: Path) -> bool:
    """An ELF with no program interpreter (PT_INTERP): it runs in an empty root."""
    data = path.read_bytes()[:4096]
    return data[:4] == b"\x7fELF" and b"/ld-linux" not in data and b"ld-musl" not in data


def busybox_rootfs(busybox: Path) -> bytes:
    """A tar of the image's root: busybox, its applets, enough of /etc for `id`."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        def add(name: str, *, kind=tarfile.DIRTYPE, mode=0o755, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for directory in ("bin", "etc", "run", "root", "var", "var/www", "proc", "sys", "dev"):
            add(directory)
        add("tmp", mode=0o1777)
        add("bin/busybox", kind=tarfile.REGTYPE, data=busybox.read_bytes())
        for applet in APPLETS:
            add(f"bin/{applet}", kind=tarfile.SYMTYPE, mode=0o777, link="busybox")
        add("etc/passwd", kind=tarfile.REGTYPE, mode=0o644,
            data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add("etc/group", kind=tarfile.REGTYPE, mode=0o644, data=b"root:x:0:\nnogroup:x:65534:\n")
    return out.getvalue()


def ensure_example_image(client, log, image: str = EXAMPLE_IMAGE) -> None:
    """Import ``image`` (the examples') into the engine when it lacks it (and this machine
    has a static busybox); otherwise log what to do."""
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    busybox = static_busybox()
    if busybox is None:
        log(f"the examples' image {image} is not in the engine, and there is no static busybox here to make "
            "it from: install one (Debian: `apt install busybox-static`) and run `swarmlet local up` again, or "
            "deploy stacks with images of your own")
        return
    repository, tag = image.rsplit(":", 1)
    log(f"making the examples' image {image} from {busybox}")
    client.api.import_image_from_data(busybox_rootfs(busybox), repository=repository, tag=tag,
                                      changes=["ENV PATH=/bin", 'CMD ["sh"]'])
    client.images.get(image)  # raises if the import did not make it
