"""Stack-wide steps on the merged document: env files, the default network, and the
checks that need every file (references between services and top-level objects)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from swarmlet.api import specs
from swarmlet.compose.context import Origin, Sources, read_text
from swarmlet.compose.errors import ComposeIssue
from swarmlet.compose.interpolation import parse_env_file

_NOWHERE = Origin("<stack>", (), None)


def fold_env_files(document: dict, origins: dict[tuple, Origin], lookup: Mapping[str, str],
                   sources: Sources) -> list[ComposeIssue]:
    """`env_file:` contents go under `environment:`, which wins over them."""
    issues: list[ComposeIssue] = []
    for name, service in document.get("services", {}).items():
        from_files: dict[str, str] = {}
        for entry in service.pop("env_file", []):
            text, problem = read_text(sources, Path(entry["path"]))
            if problem is not None:
                issues.append(problem)
                continue
            if text is None:
                if entry["required"]:
                    origin = origins.get(("env-file", name, entry["path"]), _NOWHERE)
                    issues.append(origin.issue(f'expected an existing env file, found "{entry["path"]}"'))
                continue
            values, problems = parse_env_file(text, entry["path"], lookup)
            from_files.update(values)
            issues += problems
        if from_files:
            service["environment"] = {**from_files, **service.get("environment", {})}
    return issues


def add_default_network(document: dict) -> None:
    """Services that name no network join the stack's `default` overlay network."""
    services = document.get("services", {})
    for service in services.values():
        service.setdefault("networks", {specs.DEFAULT_NETWORK_NAME: None})
    if any(specs.DEFAULT_NETWORK_NAME in s["networks"] for s in services.values()):
        document.setdefault("networks", {}).setdefault(specs.DEFAULT_NETWORK_NAME, {})


def check_stack(document: dict, origins: dict[tuple, Origin]) -> list[ComposeIssue]:
    services = document.get("services", {})
    issues: list[ComposeIssue] = []
    if not services:
        issues.append(ComposeIssue(None, "services", None, "expected at least one service, found none"))
    for name, service in services.items():
        origin = origins.get(("service", name), _NOWHERE)
        if "image" not in service:
            issues.append(origin.issue("missing required key image (build is ignored on a cluster)",
                                       origin.path + ("image",)))
        issues += _undeclared(name, "secret-ref", [r["source"] for r in service.get("secrets", [])],
                              document.get("secrets", {}), origins, "secret")
        issues += _undeclared(name, "config-ref", [r["source"] for r in service.get("configs", [])],
                              document.get("configs", {}), origins, "config")
        issues += _undeclared(name, "network-ref", list(service.get("networks", {})),
                              document.get("networks", {}), origins, "network")
        issues += _undeclared(name, "volume-ref", [m["source"] for m in service.get("volumes", [])
                                                   if m["type"] == "volume" and m.get("source")],
                              document.get("volumes", {}), origins, "volume")
        issues += _undeclared(name, "depends-on", list(service.get("depends_on", {})), services, origins, "service")
    return issues + _cycles(services, origins)


def _undeclared(service: str, kind: str, names: list[str], declared: dict,
                origins: dict[tuple, Origin], what: str) -> list[ComposeIssue]:
    where = "in services" if what == "service" else f"in the top-level {what}s"
    return [origins.get((kind, service, name), _NOWHERE).issue(f'{what} "{name}" is not declared {where}')
            for name in dict.fromkeys(names) if name not in declared]


def _cycles(services: dict, origins: dict[tuple, Origin]) -> list[ComposeIssue]:
    """One error per depends_on edge that closes a cycle (depth-first search)."""
    issues: list[ComposeIssue] = []
    state: dict[str, str] = {}  # "visiting" | "done"

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "visiting"
        for dependency in services[name].get("depends_on", {}):
            if dependency not in services:
                continue
            if state.get(dependency) == "visiting":
                loop = trail[trail.index(dependency):] + [name, dependency] if dependency in trail else [name, dependency]
                origin = origins.get(("depends-on", name, dependency), _NOWHERE)
                issues.append(origin.issue("dependency cycle: " + " -> ".join(loop)))
            elif dependency not in state:
                visit(dependency, trail + [name])
        state[name] = "done"

    for name in services:
        if name not in state:
            visit(name, [])
    return issues
