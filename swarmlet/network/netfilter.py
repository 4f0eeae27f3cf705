"""nftables and conntrack, through their command-line tools (Debian's `nftables` and
`conntrack`): `nft -f -` applies a whole ruleset in one kernel transaction, `nft -j list
ruleset` reads it back, `conntrack -D` drops the flows of a removed backend.
"""
from __future__ import annotations

import asyncio
import json
import shutil

from swarmlet.network.ruleset import Ruleset, RulesetSummary, summarize_listing

NFT_TIMEOUT = 10.0  # seconds for one nft or conntrack run


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


async def read_ruleset() -> RulesetSummary:
    return summarize_listing(json.loads(await _run("nft", "-j", "list", "ruleset")))


async def apply_ruleset(ruleset: Ruleset) -> None:
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
