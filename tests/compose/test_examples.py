"""Every stack in compose-examples/ loads without errors, and `stack config` output of
it loads again to the same specs."""
from pathlib import Path

import pytest

from swarmlet.compose import load_stack, render_document

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "compose-examples").glob("*/compose.y*ml"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_example_loads_and_round_trips(path, tmp_path):
    loaded = load_stack([path], environ={})
    assert loaded.stack.services, f"{path} defines no service"
    for service in loaded.stack.services.values():
        assert service.container.image, f"{service.name} has no image"
    rendered = tmp_path / "compose.yml"
    rendered.write_text(render_document(loaded.document))
    assert load_stack([rendered], environ={}).stack == loaded.stack
