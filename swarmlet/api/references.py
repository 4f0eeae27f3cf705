"""How a user's reference names one object, the one rule for nodes, services, stacks and
configs (as Docker resolves them): its ID; else its name; else a prefix of exactly one
object's ID. A name or prefix that fits several objects is refused, naming them."""
from __future__ import annotations

from typing import Callable, Iterable, TypeVar

from swarmlet.api.errors import Ambiguous, NotFound

T = TypeVar("T")


def object_name(obj) -> str:
    return obj.name


def object_id(obj) -> str:
    return obj.id


def resolve(kind: str, ref: str, objects: Iterable[T], name: Callable[[T], str | None] = object_name,
            id_of: Callable[[T], str] | None = object_id) -> T:
    """The one object of ``objects`` that ``ref`` names. ``id_of=None``: the objects have
    no IDs (stacks), only their names count."""
    objects = list(objects)
    if ref and id_of is not None:
        for obj in objects:
            if id_of(obj) == ref:
                return obj
    matches = [obj for obj in objects if ref and name(obj) == ref]
    if not matches and ref and id_of is not None:
        matches = [obj for obj in objects if id_of(obj).startswith(ref)]
    if not matches:
        raise NotFound(f"no such {kind}: {ref}")
    if len(matches) > 1:
        candidates = ", ".join(sorted(id_of(o) if id_of is not None else str(name(o)) for o in matches))
        raise Ambiguous(f"{kind} reference {ref!r} is ambiguous: {candidates}")
    return matches[0]


def resolve_in(store, kind: type, what: str, ref: str) -> T:
    """``resolve`` over a store's objects of ``kind``, without listing them all when
    ``ref`` is an ID (the common case: scripts and the chaos readers name configs by
    ID; listing 40,000 of them for each read held the leader's loop ~0.1 s a time)."""
    found = store.get(kind, ref) if ref else None
    return found if found is not None else resolve(what, ref, store.list(kind))
