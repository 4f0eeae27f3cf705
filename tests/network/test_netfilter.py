"""Rulesets through libnftables in-process (Debian's python3-nftables) and through the
`nft` tool: the same kernel state either way, a refusal that says what was wrong, and
the tool when the binding is missing. The kernel parts run in a namespace of their own,
in a child process (a ruleset applied here would land in the host's namespace)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from swarmlet.network import netfilter
from tests.conftest import running_in_ci

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Run in the namespace: apply the plane's ruleset by the path named, then print what
# each path reads back, and the refusal of a bad script.
CHILD = r"""
import asyncio, json, sys
from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, PublishedPort, ServiceEndpoint
from swarmlet.network import netfilter
from swarmlet.network.ruleset import render_ruleset

backends = tuple(Backend(f"t{i}", f"10.0.1.{10 + i}", "10.99.0.3") for i in range(int(sys.argv[2])))
network = OverlayNetwork(id="app", name="s_default", vni=4097, subnet="10.0.1.0/24", gateway="10.0.1.254",
                         internal=False, peers=("10.99.0.3",),
                         services=(ServiceEndpoint("web", ("web",), "vip", "10.0.1.2", backends, ((8080, "tcp"),)),))
plane = NetworkPlane(node_address="10.99.0.2", version=1, networks=(network,),
                     ingress=(PublishedPort("web", 18080, 8080, "tcp", "app", backends),))
ruleset = render_ruleset(plane)

async def main():
    if sys.argv[1] == "tool":
        netfilter.in_process_nft = lambda: None  # as when the binding is not installed
    nft = netfilter.in_process_nft()
    await netfilter.apply_ruleset(ruleset)
    read = await netfilter.read_ruleset()
    refusal = None
    try:
        await (nft.run("add rule ip nosuch chain drop") if nft is not None
               else netfilter._run("nft", "-f", "-", stdin=b"add rule ip nosuch chain drop"))
    except netfilter.NetfilterError as err:
        refusal = str(err)
    print(json.dumps({"in_process": nft is not None, "matches": read == ruleset.summary(),
                      "backends": sorted(read.backends), "refusal": refusal}))

asyncio.run(main())
"""


@pytest.fixture
def namespace(root_world):
    name = f"swnft-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_namespace(name: str, path: str, backends: int) -> dict:
    done = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", CHILD, path, str(backends)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def need_binding() -> None:
    if netfilter.load_nftables_binding() is None:
        reason = "libnftables' Python binding is not installed (apt-get install python3-nftables)"
        if running_in_ci():
            pytest.fail(f"CI is set but {reason}; .ci/setup-docker.sh installs it", pytrace=False)
        pytest.skip(reason)


def test_the_binding_is_found_from_a_python_that_is_not_debians():
    need_binding()
    assert hasattr(netfilter.load_nftables_binding(), "cmd")


def test_without_the_binding_the_nft_tool_is_used(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nftables", None)  # `import nftables` fails
    assert netfilter.load_nftables_binding(str(tmp_path / "nowhere" / "__init__.py")) is None


def test_a_binding_without_its_library_leaves_the_nft_tool(monkeypatch):
    class NoLibrary:
        @staticmethod
        def Nftables():  # noqa: N802: the module's own name
            raise OSError("libnftables.so.1: cannot open shared object file")
    monkeypatch.setitem(sys.modules, "nftables", NoLibrary)
    assert netfilter.load_nftables_binding() is None


@pytest.mark.parametrize("path", ["in-process", "tool"])
def test_both_paths_write_and_read_the_same_ruleset(namespace, path):
    if path == "in-process":
        need_binding()
    answer = in_namespace(namespace, path, backends=7)
    assert answer["in_process"] is (path == "in-process")
    assert answer["matches"], answer
    assert answer["backends"] == sorted(f"10.0.1.{10 + i}" for i in range(7))
    # A refused script says what was wrong, the way nft itself does.
    assert "syntax error" in answer["refusal"] and "nosuch" in answer["refusal"], answer["refusal"]


def test_what_the_binding_writes_is_what_the_nft_tool_lists(namespace):
    need_binding()
    in_namespace(namespace, "in-process", backends=3)
    listed = subprocess.run(["ip", "netns", "exec", namespace, "nft", "list", "set", "ip", "swarmlet", "backends"],
                            capture_output=True, text=True, check=True).stdout
    assert all(f"10.0.1.{10 + i}" in listed for i in range(3)), listed
