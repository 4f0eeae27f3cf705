"""The one name rule (swarmlet.api.names) and where it is applied: stack deploys refuse
a name whose whole cluster name breaks it, naming the field and the rule."""
from __future__ import annotations

import pytest

from swarmlet.api import names, specs
from swarmlet.api.errors import Invalid
from swarmlet.manager.stacks import deploy_ops

NOTHING = {"service": [], "network": [], "secret": [], "config": []}


@pytest.mark.parametrize("name", ["a", "web", "app_db.v2", "A-1", "0", "x" * 64])
def test_valid_names(name):
    assert names.name_problem(name) is None
    assert names.check_name("config name", name) == name


@pytest.mark.parametrize("name, problem", [
    ("", "must not be empty"),
    ("../../etc/x", "must start with a letter or digit"),
    ("a/b", "only letters, digits"),
    ("_x", "must start with a letter or digit"),
    ("-x", "must start with a letter or digit"),
    (".hidden", "must start with a letter or digit"),
    ("has space", "only letters, digits"),
    ("tab\there", "only letters, digits"),
    ("new\nline", "only letters, digits"),
    ("ünï", "only letters, digits"),
    ("x" * 65, "has 65 characters; at most 64"),
    (None, "expected a string, found NoneType"),
    (7, "expected a string, found int"),
])
def test_invalid_names_are_refused_naming_field_name_and_rule(name, problem):
    assert problem in names.name_problem(name)
    with pytest.raises(names.InvalidName) as caught:
        names.check_name("secret name", name)
    message = str(caught.value)
    assert message.startswith(f"invalid secret name {name!r}: ") and problem in message
    assert "[a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters" in message
    assert isinstance(caught.value, Invalid)  # HTTP 400


def test_a_services_whole_name_is_a_dns_label():
    names.check_stack_names("s", ["x" * 61], {})  # s_ + 61 = 63
    with pytest.raises(names.InvalidName, match=r"service name \(stack s, service x{62}\).*at most 63"):
        names.check_stack_names("s", ["x" * 62], {})


@pytest.mark.parametrize("labels, problem", [
    ({"": "v"}, "label key '' must not be empty"),
    ({" ": "v"}, "must not be empty"),
    ({"a b": "v"}, "must not contain whitespace"),
    ({"a\x00b": "v"}, "must not contain control characters"),
    ({"k" * 256: "v"}, "has 256 characters; at most 255"),
    ({"k": 1}, "the value of label 'k' must be a string"),
    (["k=v"], "expected an object of key: value"),
])
def test_label_keys_follow_moby(labels, problem):
    with pytest.raises(names.InvalidName, match=r"invalid node labels: .*") as caught:
        names.check_labels("node labels", labels)
    assert problem in str(caught.value)


def test_label_keys_moby_takes():
    labels = {"com.example.team": "web", "a/b": "", "x=y": "z", "é": "1"}
    assert names.check_labels("secret labels", labels) == labels


def stack_with(**overrides) -> dict:
    stack = specs.StackSpec(services={"web": specs.ServiceSpec(name="web", container=specs.ContainerSpec(
        image="busybox"))}, networks={"back": specs.NetworkSpec(name="back")}).to_dict()
    for key, value in overrides.items():
        stack[key] = value
    return stack


@pytest.mark.parametrize("stack, spec, complaint", [
    ("../x", stack_with(), r"invalid stack name '../x'"),
    ("s" * 65, stack_with(), r"invalid stack name 's{65}': has 65 characters"),
    ("s" * 60, stack_with(), r"invalid service name \(stack s{60}, service web\) 's{60}_web': has 64 characters; "
                             r"at most 63"),
    ("app", stack_with(networks={"n" * 61: {"name": "n" * 61}}),
     r"invalid network name \(stack app, network n{61}\) 'app_n{61}': has 65 characters"),
    ("app", stack_with(networks={"back": {"name": "back", "cluster_name": "../../etc"}}),
     r"invalid network name \(stack app, network back\) '../../etc'"),
])
def test_a_deploy_checks_the_whole_names_and_writes_nothing(stack, spec, complaint):
    with pytest.raises(names.InvalidName, match=complaint):
        deploy_ops(stack, spec, {}, prune=False, existing=NOTHING)
