"""Rules that make swarmlet load what `docker stack deploy` (docker/cli's loader and
convert code, SwarmKit's checks) and the Compose specification load, with their values."""
from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from swarmlet.compose import ComposeError, load_stack


def write(folder: Path, text: str, name: str = "compose.yml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def load(folder: Path, text: str, **environ: str):
    return load_stack([write(folder, text)], environ=environ)


def issues_of(folder: Path, text: str, **environ: str) -> list:
    with pytest.raises(ComposeError) as caught:
        load(folder, text, **environ)
    return caught.value.issues


# --- encodings -------------------------------------------------------------------------

@pytest.mark.parametrize("encoding, mark", [
    ("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE),
    ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-32-le", codecs.BOM_UTF32_LE),
])
def test_files_in_every_encoding_yaml_allows(tmp_path, encoding, mark):
    text = "services:\r\n  web:\r\n    image: caf\u00e9:1\r\n"
    path = tmp_path / "compose.yml"
    path.write_bytes(mark + text.encode(encoding))
    assert load_stack([path], environ={}).stack.services["web"].container.image == "caf\u00e9:1"


def test_an_undecodable_file_is_a_located_error(tmp_path):
    path = tmp_path / "compose.yml"
    path.write_bytes(b"services:\n  web:\n    image: x\xff\n")
    with pytest.raises(ComposeError) as caught:
        load_stack([path], environ={})
    (issue,) = caught.value.issues
    assert (issue.file, issue.line) == (str(path), 3)
    assert "cannot be read as UTF-8 (byte 0xff" in issue.message


# --- placement ---------------------------------------------------------------------------

def test_constraints_are_canonical_and_checked_by_the_scheduler_parser(tmp_path):
    result = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      placement:\n"
                            "        constraints: ['node.role == Manager', 'node.labels.zone!=a b']\n")
    assert result.stack.services["web"].placement.constraints == ["node.role==Manager", "node.labels.zone!=a b"]


def test_spread_over_something_but_labels_is_kept_with_a_warning(tmp_path):
    # swarmkit accepts any descriptor; its scheduler skips all but node/engine labels.
    result = load(tmp_path, "services:\n  web:\n    image: x\n    deploy:\n      placement:\n"
                            "        preferences: [{spread: node.id}, {spread: node.labels.zone}]\n")
    assert result.stack.services["web"].placement.preferences == ["node.id", "node.labels.zone"]
    (warning,) = result.warnings
    assert "compose.yml:6: services.web.deploy.placement.preferences[0].spread: spreading over node.id has no effect" \
        in warning
