"""The API's OpenAPI 3 document: ``openapi.yaml`` beside this module (hand-written: the
summaries, parameters and schemas), completed from the app's own routes with each
operation's ``x-roles`` (the roles its ``requires`` guard accepts, plus ``dashboard``
for the reads a dashboard session may make), so those cannot drift from the code.
``documented_operations`` and ``routed_operations`` are what the sync test compares."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from swarmlet.manager.controlapi.dashboard import DASHBOARD_ROLE, may_read

DOCUMENT_PATH = Path(__file__).with_name("openapi.yaml")
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@functools.cache
def written_document() -> dict:
    return yaml.safe_load(DOCUMENT_PATH.read_text())


def documented_operations(document: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS}


def routed_operations(router) -> set[tuple[str, str]]:
    """(method, path) of every route of an aiohttp router; the HEAD that aiohttp adds
    beside each GET is not an operation of its own."""
    return {(route.method, route.resource.canonical) for route in router.routes()
            if route.resource is not None and route.method != "HEAD"}


def document(router) -> dict:
    """The written document with ``x-roles`` from the routes' guards."""
    result = copy.deepcopy(written_document())
    for route in router.routes():
        if route.resource is None or route.method == "HEAD":
            continue
        path, method = route.resource.canonical, route.method.lower()
        operation = result["paths"].get(path, {}).get(method)
        if operation is None:
            continue  # undocumented: the sync test names it
        roles = list(getattr(route.handler, "roles", ()))
        if may_read(route.method, path):
            roles.append(DASHBOARD_ROLE)
        operation["x-roles"] = roles
    return result
