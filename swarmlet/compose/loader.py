"""Entry point: Compose files -> typed specs, a normalised document and warnings.

File reading happens only here (through `Sources`); everything else is pure.
"""
from __future__ import annotations

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
from swarmlet.compose.merge import merge_documents
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
    warnings: list[str] = []
    unset: dict[str, None] = {}
    documents: list[dict] = []
    origins: dict[tuple, Origin] = {}
    for file in files:
        text, problem = read_text(sources, file)
        if text is None:
            issues.append(problem or ComposeIssue(str(file), "", None, "compose file not found"))
            continue
        parsed = load_yaml(text, str(file))
        data = parsed.data
        ctx = FileContext(str(file), parsed.lines, files[0].absolute().parent, lookup, sources)
        issues += parsed.issues
        if parsed.issues and data is None:
            continue
        if parsed.dollars is None:
            data = interpolate_tree(data, lookup, (), ctx.error, unset.setdefault)
        else:
            interpolate_found(parsed.dollars, lookup, ctx.error, unset.setdefault)
        documents.append(normalize_file(ctx, data))
        issues += ctx.issues
        warnings += ctx.warnings
        origins.update(ctx.origins)
    merged = merge_documents(documents)
    issues += fold_env_files(merged, origins, lookup, sources)
    add_default_network(merged)
    if merged.get("services") or not issues:  # "no services" adds nothing to an earlier error
        problems, notes = check_stack(merged, origins)
        issues += problems
        warnings += notes
    if issues:
        raise ComposeError(issues)
    warnings += [f'variable "{name}" is not set; using an empty string' for name in unset]
    document = {key: merged[key] for key in _TOP_LEVEL_ORDER if key in merged}
    return LoadResult(build_stack(document, lookup), document, warnings)


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
