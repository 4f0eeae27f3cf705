"""Compose loader: Compose files -> typed stack specs, without a cluster.

    result = load_stack([Path("compose.yml")])
    result.stack      # swarmlet.api.specs.StackSpec
    result.document   # the merged, interpolated, normalised Compose document
    result.warnings   # e.g. keys ignored on a cluster
"""
from swarmlet.compose.errors import ComposeError, ComposeIssue
from swarmlet.compose.loader import LoadResult, load_stack, render_document

__all__ = ["ComposeError", "ComposeIssue", "LoadResult", "load_stack", "render_document"]
