"""Stack-wide steps on the merged document: env and label files, the default network,
and the checks that need every file (references between services and top-level
objects, and SwarmKit's checks of a whole service)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from swarmlet.api import names, specs
from swarmlet.compose.context import Origin, Sources, read_text
from swarmlet.compose.errors import ComposeIssue
from swarmlet.compose.interpolation import parse_env_file

# Where a service takes values from files: the key, and the key they go under (which wins).
_FILE_SOURCED = (("env_file", "environment"), ("label_file", "labels"))


def _nowhere(service: str) -> Origin:
    """Where a service was written, when nothing more precise was remembered."""
    return Origin("<stack>", ("services", service), None)


def fold_env_files(document: dict, origins: dict[tuple, Origin], lookup: Mapping[str, str],
                   sources: Sources) -> list[ComposeIssue]:
    """`env_file:` contents go under `environment:` and `label_file:` contents under
    `labels:`, which win over them."""
    issues: list[ComposeIssue] = []
    for name, service in document.get("services", {}).items():
        for key, target in _FILE_SOURCED:
            from_files: dict[str, str] = {}
            for entry in service.pop(key, []):
                origin = origins.get((key, name, entry["path"])) or origins.get(("service", name), _nowhere(name))
                text, problem = read_text(sources, Path(entry["path"]))
                if problem is not None:
                    issues.append(problem)
                    continue
                if text is None:
                    if entry["required"]:
                        issues.append(origin.issue(f'expected an existing {key.replace("_", " ")}, '
                                                   f'found "{entry["path"]}"'))
                    continue
                values, problems = parse_env_file(text, entry["path"], lookup, raw=entry.get("format") == "raw")
                from_files.update(values)
                issues += problems
            if from_files:
                service[target] = {**from_files, **service.get(target, {})}
    return issues


def add_default_network(document: dict) -> None:
    """Services that name no network join the stack's `default` overlay network."""
    services = document.get("services", {})
    for service in services.values():
        service.setdefault("networks", {specs.DEFAULT_NETWORK_NAME: None})
    if any(specs.DEFAULT_NETWORK_NAME in s["networks"] for s in services.values()):
        document.setdefault("networks", {}).setdefault(specs.DEFAULT_NETWORK_NAME, {})


def check_stack(document: dict, origins: dict[tuple, Origin]) -> tuple[list[ComposeIssue], list[str]]:
    """(errors, warnings) of the merged stack."""
    services = document.get("services", {})
    issues: list[ComposeIssue] = []
    warnings: list[str] = []
    if not services:
        issues.append(ComposeIssue(None, "services", None, "expected at least one service, found none"))
    for name, service in services.items():
        origin = origins.get(("service", name), _nowhere(name))
        if "image" not in service:
            why = " (build is ignored on a cluster)" if ("build", name) in origins else ""
            issues.append(origin.issue(f"missing required key image{why}", origin.path + ("image",)))
        issues += _undeclared(name, "secret-ref", [r["source"] for r in service.get("secrets", [])],
                              document.get("secrets", {}), origins, "secret")
        issues += _undeclared(name, "config-ref", [r["source"] for r in service.get("configs", [])],
                              document.get("configs", {}), origins, "config")
        issues += _undeclared(name, "network-ref", list(service.get("networks", {})),
                              document.get("networks", {}), origins, "network")
        issues += _undeclared(name, "volume-ref", [m["source"] for m in service.get("volumes", [])
                                                   if m["type"] == "volume" and m.get("source")],
                              document.get("volumes", {}), origins, "volume")
        required = [dep for dep, options in service.get("depends_on", {}).items() if options.get("required", True)]
        issues += _undeclared(name, "depends-on", required, services, origins, "service")
        issues += _check_ports(name, service, origins)
        if "restart" in service and "restart_policy" in service.get("deploy", {}):
            where = origins.get(("restart", name), origin)
            warnings.append(str(where.issue("restart is ignored: deploy.restart_policy is set")))
        elif service.get("restart", "").startswith("no"):
            where = origins.get(("restart", name), origin)
            warnings.append(str(where.issue('restart: "no" leaves the cluster\'s default policy (restart on any '
                                            "exit); set deploy.restart_policy.condition: none to never restart")))
    return issues + _cycles(services, origins) + _check_names(document, origins), warnings


def _check_names(document: dict, origins: dict[tuple, Origin]) -> list[ComposeIssue]:
    """Services' label keys against the cluster's rule (``swarmlet.api.names``; names,
    explicit names and top-level objects' labels are checked as each file is read). The
    whole names a deploy gives (``<stack>_<name>``) are checked at deploy, which knows the
    stack's name."""
    issues: list[ComposeIssue] = []
    for name, service in document.get("services", {}).items():
        where = origins.get(("service", name), _nowhere(name))
        for path, labels in ((("services", name, "labels"), service.get("labels")),
                             (("services", name, "deploy", "labels"), (service.get("deploy") or {}).get("labels"))):
            for key in labels or {}:
                problem = names.label_key_problem(key)
                if problem is not None:
                    issues.append(where.issue(f"invalid label key {key!r}: {problem}", path))
    return issues


def _check_ports(name: str, service: dict, origins: dict[tuple, Origin]) -> list[ComposeIssue]:
    """SwarmKit's validateEndpointSpec."""
    ports = service.get("ports", [])
    where = origins.get(("ports", name)) or origins.get(("service", name), _nowhere(name))
    issues = []
    if service.get("deploy", {}).get("endpoint_mode") == "dnsrr" \
            and any(p["mode"] == "ingress" for p in ports):
        issues.append(where.issue("ports published in ingress mode cannot be used with endpoint_mode dnsrr; "
                                  "publish them with mode: host"))
    seen: set[tuple] = set()
    for port in ports:
        key = (port.get("published"), port["protocol"])
        if key[0] is not None and key in seen:
            issues.append(where.issue(f"port {key[0]}/{key[1]} is published twice"))
        seen.add(key)
    return issues


def _undeclared(service: str, kind: str, names: list[str], declared: dict,
                origins: dict[tuple, Origin], what: str) -> list[ComposeIssue]:
    where = "in services" if what == "service" else f"in the top-level {what}s"
    fallback = origins.get(("service", service), _nowhere(service))
    return [origins.get((kind, service, name), fallback).issue(f'{what} "{name}" is not declared {where}')
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
                origin = origins.get(("depends-on", name, dependency), _nowhere(name))
                issues.append(origin.issue("dependency cycle: " + " -> ".join(loop)))
            elif dependency not in state:
                visit(dependency, trail + [name])
        state[name] = "done"

    for name in services:
        if name not in state:
            visit(name, [])
    return issues
