"""nftables and conntrack: a whole ruleset is applied in one kernel transaction (an
`nft -f` script) and read back as `nft -j list ruleset` JSON; `conntrack -D` drops the
flows of a removed backend.

The ruleset goes through libnftables in this process when Debian's binding for it
(`python3-nftables`, the netfilter project's own ctypes module; not on PyPI) is
installed, else through the `nft` tool (Debian's `nftables`). The same library does
the work either way; in-process it costs ~0.5 ms of CPU and ~2 ms a ruleset against
~4 ms of CPU and 30 ms for an `nft` process started from the agent on a loaded node,
and a node applies one at each plane that changes its rules (~18 while a 50-replica
deploy starts; docs/performance.md).
"""
from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import logging
import os
import shutil
import sys
import threading

from swarmlet.network.ruleset import Ruleset, RulesetSummary, summarize_listing

log = logging.getLogger("swarmlet.network")

NFT_TIMEOUT = 10.0  # seconds for one nft or conntrack run
# Where Debian's python3-nftables puts its module: a Python that is not Debian's own (a
# virtualenv, pyenv) does not look there, and the module is pure Python over ctypes.
DEBIAN_NFTABLES_MODULE = "/usr/lib/python3/dist-packages/nftables/__init__.py"


class NetfilterError(RuntimeError):
    pass


async def _run(*argv: str, stdin: bytes | None = None, ok_codes=(0,)) -> bytes:
    if shutil.which(argv[0]) is None:
        raise NetfilterError(f"{argv[0]} is not installed (Debian package {'nftables' if argv[0] == 'nft' else argv[0]})")
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), NFT_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise NetfilterError(f"{' '.join(argv)} did not finish within {NFT_TIMEOUT}s") from None
    if process.returncode not in ok_codes:
        raise NetfilterError(f"{' '.join(argv)} failed ({process.returncode}): {err.decode(errors='replace').strip()}")
    return out


def load_nftables_binding(debian_module: str = DEBIAN_NFTABLES_MODULE):
    """libnftables' ``Nftables`` context from the ``nftables`` module (importable, or
    Debian's copy at ``debian_module``), or None when neither it nor the library is there."""
    module = sys.modules.get("nftables")
    if module is None:
        try:
            import nftables as module  # noqa: F811: a Python that sees Debian's packages
        except ImportError:
            if not os.path.isfile(debian_module):
                return None
            spec = importlib.util.spec_from_file_location(
                "nftables", debian_module, submodule_search_locations=[os.path.dirname(debian_module)])
            module = importlib.util.module_from_spec(spec)
            sys.modules["nftables"] = module
            try:
                spec.loader.exec_module(module)
            except Exception:
                del sys.modules["nftables"]
                raise
    try:
        return module.Nftables()
    except OSError:  # the module without the library (Debian's libnftables1)
        return None


class InProcessNft:
    """One libnftables context, used by one thread at a time (a context is not
    thread-safe), off the event loop: a ruleset's transaction waits on the kernel."""

    def __init__(self, context):
        self._context = context
        self._lock = threading.Lock()

    def _call(self, command: str, as_json: bool) -> str:
        with self._lock:
            self._context.set_json_output(as_json)
            rc, output, error = self._context.cmd(command)
        if rc != 0:
            raise NetfilterError(f"libnftables refused the {'listing' if as_json else 'ruleset'} ({rc}): "
                                 f"{error.strip()}")
        return output

    async def run(self, command: str, as_json: bool = False) -> str:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._call, command, as_json), NFT_TIMEOUT)
        except asyncio.TimeoutError:
            raise NetfilterError(f"libnftables did not finish within {NFT_TIMEOUT}s") from None


@functools.cache
def in_process_nft() -> InProcessNft | None:
    """This process's libnftables, loaded on first use; None: `nft` processes instead."""
    try:
        context = load_nftables_binding()
    except Exception as err:  # noqa: BLE001: a broken binding leaves the nft tool
        log.warning("Debian's nftables module did not load (%s): rulesets go through the nft tool", err)
        return None
    if context is None:
        log.info("libnftables' Python binding is not installed (Debian package python3-nftables): "
                 "rulesets go through the nft tool")
        return None
    return InProcessNft(context)


async def read_ruleset() -> RulesetSummary:
    nft = in_process_nft()
    listing = await nft.run("list ruleset", as_json=True) if nft is not None else await _run("nft", "-j", "list", "ruleset")
    return summarize_listing(json.loads(listing))


async def apply_ruleset(ruleset: Ruleset) -> None:
    nft = in_process_nft()
    if nft is not None:
        await nft.run(ruleset.script())
    else:
        await _run("nft", "-f", "-", stdin=ruleset.script().encode())


async def forget_flows_to(address: str) -> None:
    """Drop every tracked flow whose replies come from `address` (a removed backend):
    a DNAT'ed connection to it stops at once instead of going on to a dead task."""
    # conntrack exits 1 when no flow matched.
    await _run("conntrack", "-D", "--reply-src", address, ok_codes=(0, 1))


# Docker's own iptables rules (in the node's namespace when its engine runs there) drop
# forwarded flows that enter a Docker bridge from another interface unless a container
# published the port, and a drop in Docker's table cannot be overridden from ours. Its
# DOCKER-USER chain is the place the engine leaves to its users: one rule per bridge
# there lets our DNAT'ed flows (the routing mesh) in.
DOCKER_USER_CHAIN = "DOCKER-USER"
_MESH_COMMENT = "swarmlet routing mesh"


def _docker_user_rule(bridge: str) -> list[str]:
    return [DOCKER_USER_CHAIN, "-o", bridge, "-m", "conntrack", "--ctstate", "DNAT", "-m", "comment",
            "--comment", _MESH_COMMENT, "-j", "ACCEPT"]


async def _docker_user_exists() -> bool:
    if shutil.which("iptables") is None:
        return False
    process = await asyncio.create_subprocess_exec("iptables", "-n", "-L", DOCKER_USER_CHAIN,
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await process.wait() == 0


async def let_mesh_into_docker_bridge(bridge: str) -> bool:
    """Make sure Docker's forward rules let DNAT'ed flows into `bridge`; False when the
    engine manages no iptables here (nothing to do)."""
    if not await _docker_user_exists():
        return False
    process = await asyncio.create_subprocess_exec("iptables", "-C", *_docker_user_rule(bridge),
                                                   stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    if await process.wait() != 0:
        await _run("iptables", "-I", *_docker_user_rule(bridge))
    return True


async def forget_docker_bridge(bridge: str) -> None:
    if await _docker_user_exists():
        await _run("iptables", "-D", *_docker_user_rule(bridge), ok_codes=(0, 1))
