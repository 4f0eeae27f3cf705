"""The Docker adapter on a real engine: a dockerd of its own inside a node namespace (as
`swarmlet local up --isolated` runs one per node), the data plane making that engine's
bridge network, and containers on it resolving and reaching a service by name through
Docker's embedded resolver, our resolver and the VIP; a client namespace reaches the
container through the routing mesh past Docker's own iptables rules."""
from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

import networld
from networld import Netns, run, wait_until
from swarmlet.api.netplane import Backend, NetworkPlane, OverlayNetwork, PublishedPort, ServiceEndpoint

NODE, CLIENT = "10.98.0.1", "10.98.0.2"
NETWORK = OverlayNetwork(id="app", name="swd_app", vni=4197, subnet="10.0.7.0/24", gateway="10.0.7.254",
                         internal=False, peers=())
WEB = Backend("web1", "10.0.7.11", NODE)
PLANE = NetworkPlane(node_address=NODE, version=1, networks=(replace(NETWORK, services=(
    ServiceEndpoint("web", ("web", "swd_web"), "vip", "10.0.7.2", (WEB,), ((8080, "tcp"),)),)),),
    ingress=(PublishedPort("web", 18080, 8080, "tcp", "app", (WEB,)),))
NETWORK_NAME = "swd_app-overlay"  # docker_network_name(NETWORK)
SERVE = "mkdir -p /www && echo web1 > /www/index.html && exec httpd -f -p 8080 -h /www"


@pytest.fixture(scope="module")
def engine_node(root_world, docker_test_image):
    if shutil.which("dockerd") is None:
        pytest.skip("dockerd is missing (Debian: docker.io)")  # docker_test_image already failed in CI then
    tag = "swd" + secrets.token_hex(2)
    root = Path(tempfile.mkdtemp(prefix=f"{tag}-docker-", dir="/var/tmp"))
    names = [f"{tag}-dk", f"{tag}-cl"]
    spaces, processes = [], []
    try:
        for name in names:
            run("ip", "netns", "add", name)
            spaces.append(Netns(name))
        node, client = spaces
        run("ip", "-n", node.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", client.name)
        for ns, address in ((node, NODE), (client, CLIENT)):
            ns.ip("link", "set", "lo", "up")
            ns.ip("addr", "add", f"{address}/24", "dev", "eth0")
            ns.ip("link", "set", "eth0", "up")
        # As on a host that did not forward before: dockerd turns forwarding on and sets
        # its FORWARD chain's policy to DROP, which the routing mesh must get past.
        node.sh("sysctl", "-qw", "net.ipv4.ip_forward=0")
        socket = root / "docker.sock"
        host = f"unix://{socket}"
        dockerd = node.popen("dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                             "--pidfile", str(root / "dockerd.pid"), "-H", host, "--bip", "10.11.97.1/24",
                             "--dns", NODE, stdout=subprocess.DEVNULL, stderr=open(root / "dockerd.log", "wb"))
        processes.append(dockerd)
        wait_until(lambda: run("docker", "-H", host, "version", check=False).returncode == 0, 60, "the node's dockerd")
        save = subprocess.Popen(["docker", "save", docker_test_image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", host, "load"], stdin=save.stdout, check=True, capture_output=True, timeout=120)
        save.wait()
        agent = networld.Agent(node, "--docker-host", host)
        yield node, client, agent, host, docker_test_image
        agent.kill()
    finally:
        for name in ("swd-web1", "swd-client"):
            run("docker", "-H", f"unix://{root / 'docker.sock'}", "rm", "-f", name, check=False)
        for process in processes:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for ns in spaces:
            ns.close()
            run("ip", "netns", "del", ns.name, check=False)
        shutil.rmtree(root, ignore_errors=True)


def docker(host: str, *args: str, check: bool = True) -> str:
    return run("docker", "-H", host, *args, check=check).stdout


def test_the_docker_adapter_makes_the_engines_network_and_the_overlay_works_through_it(engine_node):
    node, client, agent, host, image = engine_node
    result = agent.apply(PLANE)
    assert result["ruleset_written"]
    inspect = docker(host, "network", "inspect", NETWORK_NAME, "--format",
                     "{{json .IPAM.Config}} {{index .Options \"com.docker.network.bridge.name\"}} "
                     "{{index .Options \"com.docker.network.driver.mtu\"}} {{.Internal}} "
                     "{{index .Labels \"swarmlet.overlay.vni\"}} {{.Id}}")
    ipam, bridge, mtu, internal, vni, network_id = inspect.split()
    assert (bridge, mtu, internal, vni) == ("swbr4197", "1450", "false", "4197")
    assert '"Subnet":"10.0.7.0/24"' in ipam and '"Gateway":"10.0.7.254"' in ipam
    assert "master swbr4197" in node.ip("link", "show", "swvx4197")

    docker(host, "run", "-d", "--name", "swd-web1", "--network", NETWORK_NAME, "--ip", WEB.address,
           "--dns", NETWORK.gateway, image, "sh", "-c", SERVE)
    wait_until(lambda: node.http_get(WEB.address, 8080, timeout=1).strip() == "web1", 20, "web1 serving")
    # a container resolves the service by name (Docker's resolver forwards to ours) and reaches it through the VIP
    out = docker(host, "run", "--rm", "--name", "swd-client", "--network", NETWORK_NAME, "--ip", "10.0.7.21",
                 "--dns", NETWORK.gateway, image, "sh", "-c",
                 "nslookup swd_web; printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 8080")
    assert "10.0.7.2" in out and out.rstrip().endswith("web1"), out
    # the routing mesh passes Docker's own forward rules
    assert "-P FORWARD DROP" in node.sh("iptables", "-S", "FORWARD")
    assert client.http_get(NODE, 18080).strip() == "web1"

    again = agent.apply(PLANE)
    assert not again["ruleset_written"]
    assert docker(host, "network", "inspect", NETWORK_NAME, "--format", "{{.Id}}").strip() == network_id

    docker(host, "rm", "-f", "swd-web1")
    agent.command({"op": "remove_all"})
    assert docker(host, "network", "ls", "--filter", "label=swarmlet.overlay.vni", "-q").strip() == ""
    assert "swarmlet routing mesh" not in node.sh("iptables", "-S", "DOCKER-USER")


@pytest.fixture
def clean_engine(engine_node):
    """The engine node, left as found even when the test fails: no container, none of our networks."""
    yield engine_node
    node, client, agent, host, image = engine_node
    docker(host, "rm", "-f", "swd-web1", check=False)
    agent.command({"op": "remove_all"})


def our_networks(host: str) -> list[str]:
    return sorted(docker(host, "network", "ls", "--filter", "label=swarmlet.overlay.vni", "--format",
                         "{{.Name}}").split())


def test_a_network_that_left_while_its_containers_run_is_removed_once_they_are_gone(clean_engine):
    """A `stack rm`: the plane without the network can come before its containers stop.
    The engine refuses to remove a network with endpoints; the apply still succeeds, says
    the network lingers, and the data plane removes it once the container is gone, with
    no other apply (its retry timer). Before: the apply failed and nothing tried again."""
    node, client, agent, host, image = clean_engine
    agent.apply(replace(PLANE, version=10))
    docker(host, "run", "-d", "--name", "swd-web1", "--network", NETWORK_NAME, "--ip", WEB.address, image,
           "sleep", "600")
    result = agent.apply(NetworkPlane(node_address=NODE, version=11))
    assert (result["networks_removed"], result["networks_lingering"]) == ([], [4197])
    assert our_networks(host) == [NETWORK_NAME]
    docker(host, "rm", "-f", "swd-web1")
    wait_until(lambda: our_networks(host) == [] and "swarmlet routing mesh" not in node.sh("iptables", "-S",
                                                                                         "DOCKER-USER"),
               10, "the lingering network and its DOCKER-USER rule removed by the retry")
    assert "swbr4197" not in node.ip("-br", "link")


def test_a_new_network_clashing_with_a_lingering_one_is_made_once_that_one_is_gone(clean_engine):
    """The next network given the VNI (bridge name) and subnet of one that lingers (the
    allocator's cursor came round): refused while the old one has endpoints, naming it
    (the engine's own refusal was "networks have same bridge name" and then never
    again tried), and made by the next apply once they are gone, the old one removed."""
    node, client, agent, host, image = clean_engine
    agent.apply(replace(PLANE, version=20))
    docker(host, "run", "-d", "--name", "swd-web1", "--network", NETWORK_NAME, "--ip", WEB.address, image,
           "sleep", "600")
    other = OverlayNetwork(id="other", name="swd_other", vni=NETWORK.vni, subnet=NETWORK.subnet,
                           gateway="10.0.7.253", internal=False, peers=())
    plane = NetworkPlane(node_address=NODE, version=21, networks=(other,))
    with pytest.raises(RuntimeError, match=r"NetworkInUse: network swd_other: the engine's network "
                                           r"swd_app-overlay \(bridge swbr4197, subnet 10.0.7.0/24\).*still has "
                                           r"endpoints"):
        agent.apply(plane)
    assert our_networks(host) == [NETWORK_NAME]  # nothing was half made
    docker(host, "rm", "-f", "swd-web1")
    result = agent.apply(replace(plane, version=22))
    assert our_networks(host) == ["swd_other-overlay"] and result["networks_lingering"] == []
    gateway = docker(host, "network", "inspect", "swd_other-overlay", "--format", "{{(index .IPAM.Config 0).Gateway}}")
    assert gateway.strip() == "10.0.7.253"
    agent.command({"op": "remove_all"})
    assert our_networks(host) == []
