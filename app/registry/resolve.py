"""Model references in URLs: a model id, `name@alias` or `name:version`, resolved to the one
(model id, version) that answers a request.

A request resolves its reference once, here, and then goes down the ordinary serving path
with that model id: it cannot mix versions, however an alias moves meanwhile. Resolutions
are cached for `alias_cache_seconds` (one per owner and reference, concurrent misses sharing
one query); the database is the only truth, so every API process follows an alias within
that bound. A canary picks its version per request, by weight.
"""

import random
import re
from dataclasses import dataclass
from functools import partial

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from app.keys.service import TTLCache
from app.registry import service
from app.registry.schemas import ALIAS_PATTERN, NAME_PATTERN
from app.singleflight import SingleFlight
from core.db.tables import Owner

_REF = re.compile(rf"(?P<name>{NAME_PATTERN[1:-1]})(?:@(?P<alias>{ALIAS_PATTERN[1:-1]})"
                  r"|:(?P<version>[1-9][0-9]{0,8}))")


@dataclass(frozen=True)
class Ref:
    name: str
    alias: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class Target:
    """What answers one request: the model, and the registered name and version it was
    reached by (None for a bare model id)."""

    model_id: str
    name: str | None = None
    version: int | None = None

    def headers(self) -> dict[str, str]:
        headers = {"X-Model-Id": self.model_id}
        if self.version is not None:
            headers["X-Model-Version"] = str(self.version)
        return headers


Route = list[tuple[int, str, float]]  # (version, model id, weight)


def parse(ref: str) -> Ref | None:
    """`name@alias` or `name:version`; None for anything else (taken as a model id)."""
    match = _REF.fullmatch(ref)
    if match is None:
        return None
    version = match.group("version")
    return Ref(match.group("name"), match.group("alias"),
               int(version) if version is not None else None)


def pick(name: str, route: Route, draw: float) -> Target:
    """The version whose cumulative weight first passes `draw` (uniform in [0, 1))."""
    total = 0.0
    for version, model_id, weight in route:
        total += weight
        if draw < total:
            return Target(model_id, name, version)
    version, model_id, _ = route[-1]  # rounding left the draw past the sum
    return Target(model_id, name, version)


class Resolver:
    def __init__(self, sessions: sessionmaker[Session], ttl: float) -> None:
        self.sessions = sessions
        self.cache: TTLCache[tuple[str, Ref], Route] = TTLCache(ttl)
        self.loads: SingleFlight[tuple[str, Ref], Route] = SingleFlight()
        self._random = random.Random()

    async def resolve(self, owner: Owner, ref: str) -> Target:
        parsed = parse(ref)
        if parsed is None:
            return Target(ref)
        key = (owner.id, parsed)
        route = self.cache.get(key)
        if route is None:
            route = await self.loads.do(key, partial(self._load, owner, parsed, key))
        return pick(parsed.name, route, self._random.random())

    async def _load(self, owner: Owner, ref: Ref, key: tuple[str, Ref]) -> Route:
        route = await run_in_threadpool(self._query, owner, ref)
        self.cache.put(key, route)  # only answers: a 404 or 409 asks again next time
        return route

    def _query(self, owner: Owner, ref: Ref) -> Route:
        with self.sessions() as session:
            return service.routes(session, owner, ref.name, alias=ref.alias,
                                  version=ref.version)


async def target_of(request: Request, owner: Owner, ref: str) -> Target:
    """The request's model reference resolved, by the app's resolver."""
    resolver: Resolver = request.app.state.resolver
    return await resolver.resolve(owner, ref)
