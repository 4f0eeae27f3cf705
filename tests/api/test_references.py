"""One rule for what a reference names: ID, then name, then a unique ID prefix."""
from __future__ import annotations

import pytest

from swarmlet.api.errors import Ambiguous, NotFound
from swarmlet.api.references import resolve
from swarmlet.api.views import Config, Node
from swarmlet.store.state import freeze

SERVICES = [Config(freeze(o)) for o in ({"id": "abc123", "spec": {"name": "app_web"}},
                                        {"id": "abd456", "spec": {"name": "app_db"}},
                                        {"id": "app_web", "spec": {"name": "other"}})]


@pytest.mark.parametrize("ref, expected", [
    ("abc123", "abc123"),  # an ID
    ("app_db", "abd456"),  # a name
    ("abc", "abc123"),  # a unique ID prefix
    ("app_web", "app_web"),  # an ID wins over another object's name
])
def test_a_reference_names_one_object(ref, expected):
    assert resolve("service", ref, SERVICES).id == expected


def test_an_ambiguous_prefix_names_the_candidates():
    with pytest.raises(Ambiguous, match=r"service reference 'ab' is ambiguous: abc123, abd456"):
        resolve("service", "ab", SERVICES)


def test_a_name_two_objects_share_is_ambiguous():
    nodes = [Node(freeze({"id": "n1", "status": {"hostname": "box"}})), Node(freeze({"id": "n2", "status": {"hostname": "box"}}))]
    with pytest.raises(Ambiguous, match="n1, n2"):
        resolve("node", "box", nodes)


@pytest.mark.parametrize("ref", ["zzz", ""])
def test_nothing_found_says_what_was_looked_for(ref):
    with pytest.raises(NotFound, match=f"no such service: {ref}$"):
        resolve("service", ref, SERVICES)


def test_objects_without_ids_are_found_by_name_only():
    assert resolve("stack", "app", ["app", "application"], name=str, id_of=None) == "app"
    with pytest.raises(NotFound):
        resolve("stack", "ap", ["app"], name=str, id_of=None)  # no prefixes for names


class CountingStore:
    """A store of objects by ID that counts how often it is listed whole."""

    def __init__(self, objects):
        self.objects = {o.id: o for o in objects}
        self.listed = 0

    def get(self, kind, object_id):
        return self.objects.get(object_id)

    def list(self, kind):
        self.listed += 1
        return list(self.objects.values())


def test_resolve_in_finds_an_id_without_listing_and_keeps_the_rule_for_the_rest():
    from swarmlet.api.references import resolve_in

    store = CountingStore(SERVICES)
    assert resolve_in(store, Config, "service", "abc123").name == "app_web" and store.listed == 0
    assert resolve_in(store, Config, "service", "app_web").id == "app_web" and store.listed == 0  # an ID first
    assert resolve_in(store, Config, "service", "app_db").id == "abd456" and store.listed == 1  # by name: listed
    assert resolve_in(store, Config, "service", "abd").id == "abd456"  # a unique prefix
    with pytest.raises(Ambiguous):
        resolve_in(store, Config, "service", "ab")
    with pytest.raises(NotFound):
        resolve_in(store, Config, "service", "")
