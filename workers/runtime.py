"""What a worker child needs, made once per process after the fork (never in the parent)."""

import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from core.db.engine import make_engine, make_sessionmaker
from core.store import Store, open_store

# This worker process, "host:pid", as its registration (workers/reconciler.py) and its gang
# memberships (workers/gang.py) name it. Set where this module is first imported: the
# worker's main process (workers/celery_app.py imports it before the pool forks), whose
# children inherit it.
WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    store: Store
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


@lru_cache
def _runtime_for(pid: int) -> Runtime:
    settings = get_settings()
    return Runtime(settings=settings, sessions=make_sessionmaker(make_engine(settings)),
                   store=open_store(settings))


def runtime() -> Runtime:
    # Keyed by pid so that a forked child never reuses its parent's connection pool.
    return _runtime_for(os.getpid())
