"""Local Authorization List figures at LocalAuthListMaxLength (100,000 ids):

* a Full update of 100,000 entries, as a CSMS sends it: in requests of SendLocalListMaxLength entries (one Full,
  then Differential ones), from the simulated CSMS over a loopback WebSocket to the agent process — from the
  first SendLocalList.req sent to the last SendLocalList.conf received (target <= 5 s in all), and each request's
  round trip. The simulated CSMS checks one request against the schema beforehand and sends them all unchecked:
  its own jsonschema pass (some 25 ms a request) is the CSMS's cost, not the charger's;
* the lookup on a card tap, in the agent's database as that update left it: ``Authorizer.decide`` for an id,
  list entry read and rule applied (what runs between the reader's frame and the session machine's answer),
  for ids on the list and ids not on it (target p99 <= 1 ms).

``BENCH_LIST_SIZE`` sets the list's size (default 100000), ``BENCH_LOOKUPS`` the lookups (default 20000).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from firmware.charger.authorization import Authorizer, AuthSettings
from firmware.session import AuthPurpose
from firmware.storage.database import Database
from sim.csms import local_list
from sim.csms.ocppj import check_payload
from tests.station import CP_ID, Station


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def _push(root: Path, size: int) -> tuple[float, list[float], int, int]:
    """(total s, per-request round trips, chunk, final version): the list sent to a running agent."""
    async with Station(root, connectors=1) as s:
        await s.start_agent()
        keys = await s.csms.get_configuration(CP_ID, ["SendLocalListMaxLength"])
        chunk = int(keys["configurationKey"][0]["value"])
        entries = [local_list.entry(f"LL{i:08X}", "Accepted" if i % 10 else "Blocked") for i in range(size)]
        parts = local_list.chunked(entries, 1, chunk)
        for part in parts[:2]:  # a Full and a Differential: the rest have the same shape
            assert check_payload("SendLocalList", part.payload()) is None
        rounds: list[float] = []
        t0 = time.perf_counter()
        for part in parts:
            t = time.perf_counter()
            answer = await s.csms.send_local_list(CP_ID, part.version, part.update_type, part.entries, timeout_s=60,
                                                 validate=False)
            rounds.append(time.perf_counter() - t)
            assert answer["status"] == "Accepted", (part.version, answer)
        total = time.perf_counter() - t0
        version = (await s.csms.get_local_list_version(CP_ID))["listVersion"]
        assert version == parts[-1].version, version
        await s.stop_agent()
    return total, rounds, chunk, version


def _lookups(db_path: Path, size: int, n: int) -> tuple[list[float], list[float]]:
    db = Database(db_path)
    auth = Authorizer(db, lambda: AuthSettings(), list_max_length=size)
    assert len(auth.local_list) == size
    now = datetime.now(UTC)
    rng = random.Random(1)
    hits: list[float] = []
    misses: list[float] = []
    for i in range(n):
        listed = i % 2 == 0
        card = f"LL{rng.randrange(size):08X}" if listed else f"ZZ{rng.randrange(1 << 32):08X}"
        t = time.perf_counter()
        decision = auth.decide(card, online=False, purpose=AuthPurpose.START, now=now)
        (hits if listed else misses).append(time.perf_counter() - t)
        assert (decision.source is not None) == listed or not listed
    db.close()
    return hits, misses


async def _main() -> None:
    size = int(os.environ.get("BENCH_LIST_SIZE", "100000"))
    n = int(os.environ.get("BENCH_LOOKUPS", "20000"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        total, rounds, chunk, version = await _push(root, size)
        print(f"Full update of {size:,} entries in {len(rounds)} SendLocalList requests of <= {chunk:,} "
              f"(1 Full + {len(rounds) - 1} Differential, loopback, agent process): {total:.2f} s in all "
              f"(target <= 5 s); per request median {_ms(statistics.median(rounds))}, p99 {_ms(_p(rounds, 0.99))}, "
              f"max {_ms(max(rounds))}; list version {version}")
        hits, misses = _lookups(root / "agent.db", size, n)
        for name, values in (("on the list", hits), ("not on it", misses)):
            print(f"card tap lookup, {size:,}-entry list, id {name}: median {_ms(statistics.median(values))}, "
                  f"p99 {_ms(_p(values, 0.99))}, max {_ms(max(values))} ({len(values):,} lookups; "
                  "target p99 <= 1 ms)")


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
