import pytest

from swarmlet.manager.scheduler import NodeInfo, PlacementSpecError, TaskRequest, parse_constraint
from swarmlet.api.constraints import parse_preference

NODE = NodeInfo(
    "n1",
    hostname="alpha",
    role="manager",
    platform_os="linux",
    platform_arch="x86_64",
    labels={"zone": "a"},
    engine_labels={"disk": "ssd"},
)


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("node.id==n1", True),
        ("node.id!=n1", False),
        ("node.hostname==alpha", True),
        ("node.hostname!=beta", True),
        ("node.role==manager", True),
        ("node.role==worker", False),
        ("node.platform.os==linux", True),
        ("node.platform.arch==x86_64", True),
        ("node.platform.arch==aarch64", False),
        ("node.labels.zone==a", True),
        ("node.labels.zone==b", False),
        ("node.labels.zone!=b", True),
        ("engine.labels.disk==ssd", True),
        ("engine.labels.disk!=ssd", False),
        (" node.labels.zone == A ", True),  # spaces trimmed, values compare case-insensitively
    ],
)
def test_constraint_matches_node_fields(expression, expected):
    assert parse_constraint(expression).matches(NODE) is expected


def test_constraint_on_missing_label_fails_for_equal_and_passes_for_not_equal():
    assert parse_constraint("node.labels.rack==r1").matches(NODE) is False
    assert parse_constraint("node.labels.rack!=r1").matches(NODE) is True
    assert parse_constraint("engine.labels.gpu==yes").matches(NODE) is False
    assert parse_constraint("engine.labels.gpu!=yes").matches(NODE) is True


@pytest.mark.parametrize(
    "expression, message",
    [
        ("node.labels.zone", "expected exactly one == or !="),
        ("node.labels.zone=a", "expected exactly one == or !="),
        ("node.labels.zone==a==b", "expected exactly one == or !="),
        ("node.labels.zone!=a==b", "expected exactly one == or !="),
        ("node.colour==red", "unknown key 'node.colour'"),
        ("node.labels.==a", "unknown key 'node.labels.'"),
        ("node.role==", "missing or invalid value"),
        ("node.role==a,b", "missing or invalid value 'a,b'"),
        ("node.labels.zone==a,b", "missing or invalid value 'a,b'"),
        ("node.role==boss", "node.role is manager or worker"),
    ],
)
def test_malformed_constraint_is_rejected_with_expression_quoted(expression, message):
    with pytest.raises(PlacementSpecError) as raised:
        parse_constraint(expression)
    assert repr(expression) in str(raised.value)
    assert message in str(raised.value)


def test_task_request_validates_constraints_when_built():
    with pytest.raises(PlacementSpecError, match="'node.zone==a'"):
        TaskRequest("t1", "svc", constraints=["node.zone==a"])


def test_task_request_validates_preferences_when_built():
    with pytest.raises(PlacementSpecError, match="invalid placement preference ''"):
        TaskRequest("t1", "svc", preferences=[" "])


@pytest.mark.parametrize("descriptor", ["node.id", "node.hostname", "zone"])
def test_preference_on_anything_but_labels_puts_every_node_in_one_group(descriptor):
    # SwarmKit accepts any descriptor but spreads only over node and engine labels.
    read = parse_preference(descriptor)
    assert read(NODE) is None and read(NodeInfo("n2", hostname="beta")) is None


def test_preference_reads_label_or_none():
    read = parse_preference("node.labels.zone")
    assert read(NODE) == "a"
    assert read(NodeInfo("n2")) is None
