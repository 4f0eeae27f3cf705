from __future__ import annotations

from pathlib import Path

from swarmlet.api import specs
from swarmlet.compose import load_stack

BASE = """
services:
  web:
    image: web:1
    command: ["serve", "--port", "80"]
    entrypoint: /init
    environment: {A: "1", B: "1"}
    labels: [team=core, tier=front]
    ports: ["8080:80", "9090:90"]
    volumes: ["./data:/data", "cache:/cache"]
    secrets: [one]
    configs: [conf]
    cap_add: [NET_ADMIN]
    deploy:
      replicas: 2
      placement: {constraints: ["node.role==worker"]}
      resources: {limits: {cpus: "1", memory: 1G}}
volumes: {cache: {}}
secrets:
  one: {external: true}
  two: {external: true}
configs:
  conf: {external: true}
"""

OVERRIDE = """
services:
  web:
    image: web:2
    command: serve --debug
    environment: [B=2, C=3]
    labels: {tier: back}
    ports: ["8081:80"]
    volumes: ["./other:/data"]
    secrets: [{source: two, target: one}]
    cap_add: [SYS_TIME]
    deploy:
      placement: {constraints: ["node.labels.ssd==true"]}
      resources: {limits: {memory: 2G}}
"""

THIRD = """
services:
  web:
    entrypoint: ["/tini", "--"]
    environment: {C: "4"}
    deploy: {replicas: 5}
  worker:
    image: worker:1
"""


def files(folder: Path, *texts: str) -> list[Path]:
    paths = []
    for i, text in enumerate(texts):
        sub = folder / f"dir{i}"  # later files elsewhere: relative paths still follow the first
        sub.mkdir()
        paths.append(sub / "compose.yml")
        paths[-1].write_text(text)
    return paths


def test_two_files(tmp_path):
    web = load_stack(files(tmp_path, BASE, OVERRIDE), environ={}).stack.services["web"]
    first_dir = tmp_path / "dir0"
    assert web.container.image == "web:2"
    assert web.container.command == ["serve", "--debug"]             # replaced
    assert web.container.entrypoint == ["/init"]                     # kept
    assert web.container.env == {"A": "1", "B": "2", "C": "3"}       # merged by name
    assert web.container.labels == {"team": "core", "tier": "back"}
    # The spec's unique key (13-merge.md): an override adds 8081:80 beside 8080:80, as docker/cli does.
    assert [(p.target, p.published) for p in web.endpoint.ports] == [(80, 8080), (90, 9090), (80, 8081)]
    assert [(m.target, m.source) for m in web.container.mounts] == [
        ("/data", str(first_dir / "other")), ("/cache", "cache")]    # by target, path from first file
    assert [(s.source, s.target) for s in web.container.secrets] == [("two", "/run/secrets/one")]
    assert [c.source for c in web.container.configs] == ["conf"]
    assert web.container.cap_add == ["NET_ADMIN", "SYS_TIME"]
    assert web.placement.constraints == ["node.role==worker", "node.labels.ssd==true"]
    assert web.resources.limits == specs.Resources(cpus=1.0, memory=2 * 1024 ** 3)
    assert web.replicas == 2


def test_three_files(tmp_path):
    stack = load_stack(files(tmp_path, BASE, OVERRIDE, THIRD), environ={}).stack
    web = stack.services["web"]
    assert web.container.entrypoint == ["/tini", "--"]
    assert web.container.command == ["serve", "--debug"]
    assert web.container.env == {"A": "1", "B": "2", "C": "4"}
    assert web.replicas == 5
    assert sorted(stack.services) == ["web", "worker"]


def test_logging_options_merge_unless_the_driver_changes(tmp_path):
    base = "services:\n  s:\n    image: x\n    logging: {driver: syslog, options: {a: '1'}}\n"
    same = "services:\n  s:\n    logging: {options: {b: '2'}}\n"
    other = "services:\n  s:\n    logging: {driver: gelf, options: {c: '3'}}\n"
    merged = load_stack(files(tmp_path, base, same), environ={}).stack.services["s"].container.logging
    assert merged == specs.LogDriver("syslog", {"a": "1", "b": "2"})
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    replaced = load_stack(files(other_folder, base, other), environ={}).stack.services["s"].container.logging
    assert replaced == specs.LogDriver("gelf", {"c": "3"})
