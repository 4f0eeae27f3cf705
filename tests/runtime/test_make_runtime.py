"""Which runtime, and which network lock, a node's config gives (no engine is called)."""

from swarmlet.node.config import DataDir, NodeConfig
from swarmlet.node.run import make_runtime
from swarmlet.runtime import DockerRuntime, ProcessRuntime
from swarmlet.runtime.docker import MachineNetworkLock, ProcessNetworkLock


def node_config(**fields) -> NodeConfig:
    return NodeConfig(node_id="node-make-runtime", cluster_id="c", role="worker", advertise_addr="127.0.0.1", **fields)


async def test_a_node_alone_on_its_engine_locks_networks_within_its_process(tmp_path):
    runtime = make_runtime(node_config(), DataDir(tmp_path))
    try:
        assert isinstance(runtime, DockerRuntime)
        assert isinstance(runtime.network_lock, ProcessNetworkLock)
    finally:
        await runtime.close()


async def test_a_node_sharing_its_engine_takes_the_machine_wide_lock(tmp_path):
    runtime = make_runtime(node_config(shared_engine=True), DataDir(tmp_path))
    try:
        assert isinstance(runtime.network_lock, MachineNetworkLock)
    finally:
        await runtime.close()


async def test_the_process_runtime(tmp_path):
    runtime = make_runtime(node_config(runtime="process"), DataDir(tmp_path))
    try:
        assert isinstance(runtime, ProcessRuntime)
    finally:
        await runtime.close()


def test_an_old_node_json_without_the_field_loads(tmp_path):
    data_dir = DataDir(tmp_path)
    data_dir.save(node_config())
    text = data_dir.config_path.read_text()
    assert '"shared_engine": false,' in text
    data_dir.config_path.write_text(text.replace('"shared_engine": false,', ""))
    assert data_dir.load().shared_engine is False
