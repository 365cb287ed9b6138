"""The scheduler's claim at scale (DESIGN.md, 'At scale'): 10,000 queued rows on PostgreSQL,
20 concurrent claimers, each claiming the best job with workers/scheduler.py's one query
until none is left (each claimed job then ends, as its worker would end it, so that as
many run at once as there are claimers). Prints one JSON line: claims/s, p50 and p99 claim
latency, and whether every job was claimed exactly once.

    python -m bench.claim_throughput [--rows 10000] [--claimers 20] [--owners 50]

Needs a PostgreSQL server (TRAINSERVE_BENCH_PG_ADMIN, default the local one); it works on a
database of its own, dropped at the end.
"""

import argparse
import json
import os
import secrets
import statistics
import threading
import time
from collections import Counter
from datetime import timedelta

import psycopg
from sqlalchemy import create_engine, insert
from sqlalchemy.orm import sessionmaker

from core import lifecycle
from core.db.tables import Base, Job, Owner, new_id, utcnow
from core.lifecycle import FailureKind
from workers.scheduler import claim_next

USER = FailureKind.USER

PG_ADMIN = os.environ.get("TRAINSERVE_BENCH_PG_ADMIN",
                          "postgresql://postgres@127.0.0.1:5432/postgres")


def fill(url: str, rows: int, owners: int) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    base = utcnow() - timedelta(days=1)
    with engine.begin() as conn:
        ids = [new_id() for _ in range(owners)]
        conn.execute(insert(Owner), [{"id": i, "name": f"owner-{n}", "is_admin": False,
                                      "created_at": base} for n, i in enumerate(ids)])
        conn.execute(insert(Job), [{
            "id": new_id(), "owner_id": ids[n % owners], "name": f"j{n}", "status": "queued",
            "spec": {}, "dataset_ref": "builtin:digits", "queue": "cpu", "epochs": 1,
            "priority": (0, 1, 1, 1, 2)[n % 5], "created_at": base + timedelta(milliseconds=n),
            "attempts": 0, "cancel_requested": False, "epoch": 0} for n in range(rows)])
    engine.dispose()


def run(url: str, claimers: int) -> tuple[list[float], Counter[str], float]:
    latencies: list[float] = []
    claimed: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(claimers + 1)
    engine = create_engine(url, pool_size=claimers, max_overflow=0)
    sessions = sessionmaker(engine, expire_on_commit=False)

    def claimer(name: str) -> None:
        mine: list[float] = []
        start.wait()
        while True:
            began = time.perf_counter()
            job_id = claim_next(sessions, "cpu", worker=name, lease_seconds=300, max_attempts=3)
            if job_id is None:
                break
            mine.append(time.perf_counter() - began)
            with lock:
                claimed[job_id] += 1
            # Its worker runs it and it ends: as many run at once as there are claimers.
            with sessions.begin() as session:
                lifecycle.fail(session, job_id, worker=name, error="bench", kind=USER)
        with lock:
            latencies.extend(mine)
    threads = [threading.Thread(target=claimer, args=(f"bench-{i}",)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    engine.dispose()
    return latencies, claimed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--claimers", type=int, default=20)
    parser.add_argument("--owners", type=int, default=50)
    args = parser.parse_args()
    name = f"trainserve_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    try:
        fill(url, args.rows, args.owners)
        latencies, claimed, elapsed = run(url, args.claimers)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    ordered = sorted(latencies)
    print(json.dumps({
        "bench": "claim_throughput", "rows": args.rows, "claimers": args.claimers,
        "owners": args.owners, "claims": len(latencies),
        "claims_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2) if ordered else None,
        "each_once": len(claimed) == args.rows and set(claimed.values()) == {1}}))


if __name__ == "__main__":
    main()
