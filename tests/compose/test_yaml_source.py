"""The YAML layer: scalar types, merge keys, key path -> line, and the fast paths
(interpolating only noted strings, the garbage collector paused during a load)."""
from __future__ import annotations

import gc
import math
from pathlib import Path

import pytest
import yaml

from swarmlet.compose import ComposeError, load_stack
from swarmlet.compose.context import FileContext
from swarmlet.compose.yamlsource import load_yaml, parse_yaml


def test_scalars_follow_compose_yaml_rules():
    text = """
a: yes
b: on
c: true
d: False
e: ~
f: null
g:
h: 0x1F
i: 017
j: 1_000
k: 22:22
l: 1.5
m: .inf
n: 12
o: "12"
p: '12'
q: !!str 12
r: !!int "7"
s: 2001-12-14
t: =
u: <<x
v: -3
w: +4
y: <<
x: |
  block
"""
    data, _, issues = parse_yaml(text, "f.yml")
    assert issues == []
    assert data == {"a": "yes", "b": "on", "c": True, "d": False, "e": None, "f": None, "g": None,
                    "h": 31, "i": 15, "j": 1000, "k": "22:22", "l": 1.5, "m": math.inf, "n": 12,
                    "o": "12", "p": "12", "q": "12", "r": 7, "s": "2001-12-14", "t": "=", "u": "<<x",
                    "v": -3, "w": 4, "x": "block\n", "y": "<<"}
    assert type(data["c"]) is bool and type(data["n"]) is int and type(data["l"]) is float


def test_plain_scalars_agree_with_the_safe_loader_apart_from_yaml_1_1_words():
    words = ["0", "00", "09", "0b101", "0o17", "-0x1f", "1e3", "1.0e+3", "-.5", ".NaN", "NULL", "Null",
             "TRUE", "tRue", "Off", "n", "1:30", "190:20:30.15", "+", ".", "~x"]
    data, _, _ = parse_yaml("\n".join(f"k{i}: {w}" for i, w in enumerate(words)), "f.yml")
    for i, word in enumerate(words):
        expected = yaml.safe_load(f"v: {word}")["v"]
        if isinstance(expected, bool) and word.lower() not in ("true", "false"):
            expected = word  # yes/no/on/off stay strings
        elif ":" in word and isinstance(expected, (int, float)):
            expected = word  # no base-60 numbers
        got = data[f"k{i}"]
        assert type(got) is type(expected) and (got == expected or got != got), (word, got, expected)


def test_keys_are_strings():
    data, _, _ = parse_yaml("1: a\ntrue: b\nnull: c\n'x': d\n1.5: e\n", "f.yml")
    assert data == {"1": "a", "True": "b", "None": "c", "x": "d", "1.5": "e"}


def lines_of(text: str) -> FileContext:
    parsed = load_yaml(text, "f.yml")
    return FileContext("f.yml", parsed.lines, Path("/"), {}, None)  # type: ignore[arg-type]


def test_key_paths_know_their_lines():
    ctx = lines_of("""services:
  web:
    image: x
    ports:
      - "80:80"
      - target: 9000
        published: 9001
x-m: &m
  user: u
  deploy: {replicas: 2}
""")
    assert ctx.line_of(("services",)) == 1
    assert ctx.line_of(("services", "web", "image")) == 3
    assert ctx.line_of(("services", "web", "ports", 0)) == 5
    assert ctx.line_of(("services", "web", "ports", 1, "published")) == 7
    assert ctx.line_of(("services", "web", "ports", 1, "nope")) == 6  # nearest known ancestor
    assert ctx.line_of(("services", "web", "ports", 5)) == 4
    assert ctx.line_of(("services", "web", "ports", "0")) == 4  # a list has no key "0"
    assert ctx.line_of(("x-m", "deploy", "replicas")) == 10
    assert ctx.line_of(("elsewhere",)) is None


def test_merged_keys_have_the_line_where_they_were_written():
    ctx = lines_of("""x-base: &base
  image: base
  user: u
services:
  web:
    <<: *base
    image: own
""")
    assert ctx.line_of(("services", "web", "image")) == 7
    assert ctx.line_of(("services", "web", "user")) == 3


def test_an_anchor_with_its_own_merge_key_can_be_used_again():
    # The inner mapping is first met as a `<<` value, then aliased: its own keys
    # still win over what it merges, and nothing is reported twice.
    text = """services:
  s:
    <<: &inner {<<: {image: i1, user: u}, image: i2}
    command: x
  t: *inner
  u:
    <<: *inner
    image: i3
"""
    data, _, issues = parse_yaml(text, "f.yml")
    assert issues == []
    assert data["services"] == {"s": {"image": "i2", "user": "u", "command": "x"},
                                "t": {"image": "i2", "user": "u"},
                                "u": {"image": "i3", "user": "u"}}


def test_bad_merge_values_are_reported_once_at_the_merge_key():
    text = "x-a: &a [1]\nservices:\n  s: &s\n    image: x\n    <<: *a\n  t: *s\n"
    _, _, issues = parse_yaml(text, "f.yml")
    assert [(i.path, i.line) for i in issues] == [("services.s", 5)]
    assert "expected a mapping for merging, but found scalar" in issues[0].message


def test_duplicate_keys_and_complex_keys_name_their_line():
    _, _, issues = parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n? [x]\n: 3\n", "f.yml")
    assert [(i.path, i.line, i.message) for i in issues] == [
        ("b.c", 4, 'duplicate key "c"'), ("", 5, "expected a plain key, found a mapping or a list")]


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "compose.yml"
    file.write_text(text)
    return file


def test_overridden_merged_values_are_interpolated_like_the_rest(tmp_path):
    # A value overridden after a merge is never interpolated; the rest keep document order.
    file = write(tmp_path, """services:
  web:
    <<: {image: "${A:?a}", user: "${B:?b}", hostname: "${C:?c}"}
    hostname: h
    user: "${D:?d}"
""")
    with pytest.raises(ComposeError) as caught:
        load_stack([file], environ={})
    assert [(i.path, i.line) for i in caught.value.issues] == [
        ("services.web.image", 3), ("services.web.user", 5)]
    assert "variable A" in caught.value.issues[0].message and "variable D" in caught.value.issues[1].message


def test_only_strings_with_dollars_are_touched_and_unset_variables_warn_in_order(tmp_path):
    file = write(tmp_path, """services:
  web:
    image: "img:${TAG}"
    command: [run, "${FIRST}", "$$HOME", "${SECOND:-x}"]
    environment: {A: "${THIRD}", B: plain}
""")
    result = load_stack([file], environ={"TAG": "2"})
    web = result.stack.services["web"].container
    assert (web.image, web.command, web.env) == ("img:2", ["run", "", "$HOME", "x"], {"A": "", "B": "plain"})
    assert result.warnings == [f'variable "{name}" is not set; using an empty string' for name in ("FIRST", "THIRD")]


def test_an_error_found_after_the_merge_still_names_its_line(tmp_path):
    file = write(tmp_path, """services:
  web:
    image: x
    secrets: [missing]
    networks: [nowhere]
""")
    with pytest.raises(ComposeError) as caught:
        load_stack([file], environ={})
    assert sorted((i.path, i.line) for i in caught.value.issues) == [
        ("services.web.networks[0]", 5), ("services.web.secrets[0]", 4)]


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("broken", [False, True])
def test_the_garbage_collector_is_left_as_it_was(tmp_path, enabled, broken):
    file = write(tmp_path, "services: {web: {image: x}}\n" if not broken else "services: {web: {}}\n")
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        try:
            load_stack([file], environ={})
        except ComposeError:
            assert broken
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
