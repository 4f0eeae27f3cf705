"""Entry point: Compose files -> typed specs, a normalised document and warnings.

File reading happens only here (through `Sources`); everything else is pure.
"""
from __future__ import annotations

import copy
import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from swarmlet.api.specs import StackSpec
from swarmlet.compose.build import build_stack
from swarmlet.compose.context import DiskSources, FileContext, Origin, Sources, read_text
from swarmlet.compose.crossref import add_default_network, check_stack, fold_env_files
from swarmlet.compose.document import normalize_file
from swarmlet.compose.errors import ComposeError, ComposeIssue
from swarmlet.compose.interpolation import interpolate_found, interpolate_tree, parse_env_file
from swarmlet.compose.merge import merge_documents, merge_values
from swarmlet.compose.service import service
from swarmlet.compose.yamlsource import load_yaml

DEFAULT_ENV_FILE = ".env"
_TOP_LEVEL_ORDER = ("name", "services", "networks", "volumes", "secrets", "configs")


@dataclass(frozen=True)
class LoadResult:
    stack: StackSpec
    document: dict[str, Any]  # merged, interpolated, normalised Compose document
    warnings: list[str]


def interpolation_variables(first_file: Path, env_files: list[Path] | None, environ: Mapping[str, str],
                            sources: Sources) -> tuple[dict[str, str], list[ComposeIssue]]:
    """`.env` beside the first file (or the given env files, later ones winning),
    then the process environment over all of them."""
    explicit = env_files is not None
    paths = env_files if explicit else [first_file.parent / DEFAULT_ENV_FILE]
    variables: dict[str, str] = {}
    issues: list[ComposeIssue] = []
    for path in paths:
        text, problem = read_text(sources, path)
        if text is None:
            if problem is not None:
                issues.append(problem)
            elif explicit:
                issues.append(ComposeIssue(str(path), "", None, "env file not found"))
            continue
        values, problems = parse_env_file(text, str(path), {**variables, **environ})
        variables.update(values)
        issues += problems
    return {**variables, **environ}, issues


def load_stack(files: list[Path], env_files: list[Path] | None = None,
               environ: Mapping[str, str] | None = None, sources: Sources | None = None) -> LoadResult:
    """Loads, interpolates, merges and checks Compose files. Raises ComposeError with
    every problem found; relative paths resolve against the first file's folder."""
    # A big file means ~200 000 short-lived, acyclic objects (YAML nodes, their marks,
    # values): the cyclic garbage collector would scan them many times over (~20% of
    # the load) and find nothing to collect, since reference counting frees them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_stack(files, env_files, environ, sources)
    finally:
        if collecting:
            gc.enable()


def _load_stack(files: list[Path], env_files: list[Path] | None,
                environ: Mapping[str, str] | None, sources: Sources | None) -> LoadResult:
    if not files:
        raise ComposeError([ComposeIssue(None, "", None, "no compose file given")])
    sources = sources or DiskSources()
    environ = dict(os.environ if environ is None else environ)
    files = [Path(f) for f in files]
    lookup, issues = interpolation_variables(files[0], env_files, environ, sources)
    loading = _Loading(sources)
    base_dir = files[0].absolute().parent
    documents = [document for file in files
                 if (document := loading.load_file(file, base_dir, lookup, chain=())) is not None]
    issues += loading.issues()
    warnings = loading.warnings()
    origins = loading.origins()
    merged = merge_documents(documents)
    issues += fold_env_files(merged, origins, lookup, sources)
    add_default_network(merged)
    if merged.get("services") or not issues:  # "no services" adds nothing to an earlier error
        problems, notes = check_stack(merged, origins)
        issues += problems
        warnings += notes
    if issues:
        raise ComposeError(issues)
    warnings += [f'variable "{name}" is not set; using an empty string' for name in loading.unset]
    document = {key: merged[key] for key in _TOP_LEVEL_ORDER if key in merged}
    return LoadResult(build_stack(document, lookup), document, warnings)


# What an included project brings into the one that includes it (compose-go importResources).
_INCLUDED_KINDS = ("services", "networks", "volumes", "secrets", "configs")


class _Loading:
    """Files read while loading one stack: its own, the ones they include, and the ones
    their services extend. Every file's context is kept, for its problems and origins."""

    def __init__(self, sources: Sources):
        self.sources = sources
        self.contexts: list[FileContext] = []
        self.unset: dict[str, None] = {}
        self._parsed: dict[tuple, tuple[Any, FileContext] | None] = {}
        self._extended_files: dict[int, _Services] = {}  # by id of the file's context

    def issues(self) -> list[ComposeIssue]:
        return [issue for ctx in self.contexts for issue in ctx.issues]

    def warnings(self) -> list[str]:
        return [warning for ctx in self.contexts for warning in ctx.warnings]

    def origins(self) -> dict[tuple, Origin]:
        return {key: origin for ctx in self.contexts for key, origin in ctx.origins.items()}

    def parse(self, file: Path, base_dir: Path, lookup: Mapping[str, str]) -> tuple[Any, FileContext] | None:
        """A file's YAML, interpolated, and the context it reports in; None when there
        is nothing to normalise (a missing or unreadable file, broken YAML)."""
        key = (str(file.absolute()), str(base_dir), id(lookup))
        if key in self._parsed:
            return self._parsed[key]
        ctx = FileContext(str(file), {}, base_dir, lookup, self.sources)
        self.contexts.append(ctx)
        self._parsed[key] = None
        text, problem = read_text(self.sources, file)
        if text is None:
            ctx.issues.append(problem or ComposeIssue(str(file), "", None, "compose file not found"))
            return None
        parsed = load_yaml(text, str(file))
        ctx.lines = parsed.lines
        ctx.issues += parsed.issues
        data = parsed.data
        if parsed.issues and data is None:
            return None
        if parsed.dollars is None:
            data = interpolate_tree(data, lookup, (), ctx.error, self.unset.setdefault)
        else:
            interpolate_found(parsed.dollars, lookup, ctx.error, self.unset.setdefault)
        self._parsed[key] = (data, ctx)
        return data, ctx

    def load_file(self, file: Path, base_dir: Path, lookup: Mapping[str, str], chain: tuple[str, ...]) -> dict | None:
        """One file normalised, with what it includes brought in and its services'
        `extends` applied (in that order, as compose-go: a service may extend an
        included one). `chain`: the files including this one, to refuse a cycle."""
        parsed = self.parse(file, base_dir, lookup)
        if parsed is None:
            return None
        data, ctx = parsed
        document = normalize_file(ctx, data)
        self._include(document, ctx, chain + (str(file.absolute()),))
        services = _Services(ctx, document.get("services", {}))
        for name in list(document.get("services", {})):
            self._extend(services, name, trail=())
        return document

    # -- include ----------------------------------------------------------------------

    def _include(self, document: dict, ctx: FileContext, chain: tuple[str, ...]) -> None:
        """Each entry loaded as a project of its own (its own folder for relative paths,
        its own .env under the includer's variables), its resources copied in. A name
        this file defines otherwise stays this file's, with a warning (the spec: no merge)."""
        for entry in document.pop("include", []):
            where = ("include", entry["index"])
            paths = [Path(p) for p in entry["path"]]
            if str(paths[0]) in chain:
                ctx.error(where, "include cycle: " + " -> ".join([*chain, str(paths[0])]))
                continue
            missing = [path for path in paths if not self.sources.is_file(path)]
            if missing:
                ctx.error(where + ("path",), f'expected an existing compose file, found "{missing[0]}"')
                continue
            project_dir = Path(entry.get("project_directory") or paths[0].parent)
            lookup = self._included_variables(entry, project_dir, ctx, where)
            included = merge_documents([d for path in paths
                                        if (d := self.load_file(path, project_dir, lookup, chain)) is not None])
            for kind in _INCLUDED_KINDS:
                for name, definition in included.get(kind, {}).items():
                    if name not in document.get(kind, {}):
                        document.setdefault(kind, {})[name] = definition
                    elif document[kind][name] != definition:
                        ctx.warn(where, f"{kind[:-1]} {name!r} of {paths[0]} is not included: this file defines "
                                        "another of that name")

    def _included_variables(self, entry: dict, project_dir: Path, ctx: FileContext, where) -> dict[str, str]:
        """The included project's env files (default: its folder's .env, if any), under
        the including project's variables, which win."""
        explicit = "env_file" in entry
        values: dict[str, str] = {}
        for path in [Path(p) for p in entry["env_file"]] if explicit else [project_dir / DEFAULT_ENV_FILE]:
            text, problem = read_text(self.sources, path)
            if problem is not None or (text is None and explicit):
                ctx.error(where + ("env_file",), str(problem.message) if problem else f'env file "{path}" not found')
            if text is not None:
                found, problems = parse_env_file(text, str(path), {**values, **ctx.lookup})
                values.update(found)
                ctx.issues.extend(problems)
        return {**values, **ctx.lookup}

    # -- extends ----------------------------------------------------------------------

    def _extend(self, services: _Services, name: str, trail: tuple) -> dict | None:
        """The service with its `extends` applied, recursively: the base (from this file
        or another, normalised there) merged under it by the multi-file merge rules."""
        service = services.get(name)
        ctx = services.ctx
        place = (ctx.file, name)
        if place in trail:
            ctx.error(("services", name, "extends"), "extends cycle: " +
                      " -> ".join(f"{file}:{service_name}" for file, service_name in [*trail, place]))
            return service
        if service is None or "extends" not in service:
            return service
        extends = service.pop("extends")
        base_services = services if "file" not in extends else self._services_of(Path(extends["file"]), ctx)
        if base_services is None:
            ctx.error(("services", name, "extends", "file"), f'expected an existing compose file, found "{extends["file"]}"')
            return service
        base = self._extend(base_services, extends["service"], trail + (place,))
        if base is None:
            if base_services.readable:  # else the file's own problems are reported already
                ctx.error(("services", name, "extends", "service"),
                          f'service "{extends["service"]}" is not defined in {base_services.ctx.file}')
            return service
        merged = merge_values(copy.deepcopy(base), service, ("services", name))
        services.normalised[name] = merged
        _inherit_origins(base_services.ctx, extends["service"], ctx, name)
        return merged

    def _services_of(self, file: Path, by: FileContext) -> _Services | None:
        """Services of a file named by `extends: {file: …}`: its relative paths are its
        own folder's, its variables the extending file's."""
        if not self.sources.is_file(file):
            return None
        parsed = self.parse(file, file.absolute().parent, by.lookup)
        if parsed is None:
            return _Services(by, {}, readable=False)
        data, ctx = parsed
        if id(ctx) not in self._extended_files:
            raw = data.get("services") if isinstance(data, dict) else None
            self._extended_files[id(ctx)] = _Services(ctx, {}, raw if isinstance(raw, dict) else {})
        return self._extended_files[id(ctx)]


class _Services:
    """A file's services, normalised as they are asked for: a file that is only
    extended from is checked no further than the services taken from it."""

    def __init__(self, ctx: FileContext, normalised: dict[str, dict], raw: dict | None = None,
                 readable: bool = True):
        self.ctx = ctx
        self.normalised = normalised
        self.raw = raw or {}
        self.readable = readable  # False: the file could not be read or parsed

    def get(self, name: str) -> dict | None:
        if name not in self.normalised and name in self.raw:
            self.normalised[name] = service(self.ctx, ("services", name), self.raw[name]) or {}
        return self.normalised.get(name)


def _inherit_origins(base_ctx: FileContext, base: str, ctx: FileContext, name: str) -> None:
    """What the extending service got from its base is reported where the base wrote it."""
    for key, origin in list(base_ctx.origins.items()):
        if len(key) > 1 and key[1] == base and key[0] != "service":
            ctx.origins.setdefault((key[0], name, *key[2:]), origin)


def _escape_dollars(value: Any) -> Any:
    """`$` -> `$$`, so that the printed document interpolates back to the same values."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape_dollars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_dollars(v) for v in value]
    return value


def render_document(document: dict[str, Any], fmt: str = "yaml") -> str:
    escaped = _escape_dollars(document)
    if fmt == "json":
        return json.dumps(escaped, indent=2) + "\n"
    return yaml.safe_dump(escaped, sort_keys=False, default_flow_style=False, allow_unicode=True)
