"""Limits as data (issue 15): a guarded call under 4 store-held limits vs the same 4 in code.

    python bench/bench_limits.py [--quick] [--json] [--ops N] [--rounds N] [--url redis://127.0.0.1:6379/10]

One guarded call through the public API on a real Redis, one connection,
sequential: ``with bg.spend_limit(tenant=, user=, feature=):
bg.admit_cost(n).settle_nanos(n)`` (admission: load the stored limits, plan the
counters, reserve; then settle). Estimation is left out (a fixed cost), so the
figures are the price of the limits alone. Configurations, interleaved round
after round in the same run, each on its own key prefix:

(a) code: ``Policy(limits=[global day, tenant month, user day, feature day])``,
    nothing stored;
(b) store: ``Policy()`` with no limits, the same four stored with
    ``bg.set_limit`` (keyed to tenant "acme", user "u-1", feature "chat", the
    global one unkeyed): the call reserves on identical counters (checked);
    ``RedisStore(limits_refresh_s=1)``, the default;
(c) as (b) with ``limits_refresh_s=0``: the stored limits re-read on every call
    (one more round trip, returning only the version): informational;
many tenants: 1,000 tenants cycling, one per call, (a') with the code limits,
(b') with 10,000 tenants put on a plan by ``bg.set_plan`` (the plan holding the
tenant and user limits, the global and feature limits stored), and (c') as (b')
re-reading every call: planning is a few dict lookups whatever the number of
stored entries. Last, the planning step alone (no I/O, 1,000 tenants cycling)
against books of 0, 10,002 and 200,002 entries.

Configurations alternate every 250 calls; each call is timed on its own. A round
gives each configuration the median of its calls (a burst of another process's
work on this shared machine's CPU or Redis server moves a mean, not a median),
the mean (everything, the once-per-second re-read of the stored limits
included) and its client CPU time. Round trips are counted client-side (every
command sent), the stored-limit reads (EVALSHA of limits.lua) apart.
Target (issue 15): (b) / (a) <= 1.1x, the median over rounds of the ratio of
the per-call medians.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from _report import header, machine, table

import budgetguard as bg
from budgetguard._core.attribution import Attribution
from budgetguard._core.limitbook import EMPTY_BOOK, LimitBook
from budgetguard._core.plan import plan_caps, plan_counters
from budgetguard.stores import RedisStore
from budgetguard.stores.redis.plans import script_source

BIG = 10**6  # USD: never denied
HOLD, ACTUAL = 1_000, 700  # nano-USD reserved and settled per call
TARGET = 1.1
CHUNK = 250  # calls of one configuration before switching to the next
TENANTS, PLANNED = 1_000, 10_000  # tenants cycling; tenants put on a plan
PREFIX = f"bglim{uuid.uuid4().hex[:6]}"  # every Redis key of this run; deleted at the end

GLOBAL = bg.Limit(scope="global", usd=BIG, window="day")
TENANT = bg.Limit(scope="tenant", usd=BIG, window="month")
USER = bg.Limit(scope="user", usd=BIG, window="day")
FEATURE = bg.Limit(scope="feature", usd=BIG, window="day")
CODE_LIMITS = (GLOBAL, TENANT, USER, FEATURE)


def keyed(limit: bg.Limit, key: str) -> bg.Limit:
    return bg.Limit(scope=limit.scope, usd=BIG, window=limit.window, key=key)


# -- configurations -----------------------------------------------------------------
@dataclass
class Config:
    name: str
    store: RedisStore
    policy: bg.Policy
    tenants: Sequence[str]

    def use(self) -> None:
        bg.configure(store=self.store, policy=self.policy)

    def loop(self, n: int, start: int = 0, took: list[int] | None = None) -> None:
        """``n`` guarded calls; with ``took``, each call's nanoseconds appended to it."""
        tenants = self.tenants
        count = len(tenants)
        clock = time.perf_counter_ns
        for i in range(start, start + n):
            started = clock()
            with bg.spend_limit(tenant=tenants[i % count], user="u-1", feature="chat"):
                bg.admit_cost(HOLD).settle_nanos(ACTUAL)
            if took is not None:
                took.append(clock() - started)

    def counters(self, tenant: str) -> list[tuple[str, int, str, str]]:
        self.use()
        with bg.spend_limit(tenant=tenant, user="u-1", feature="chat"):
            admission = bg.admit_cost(HOLD)
            admission.settle_nanos(ACTUAL)
        return sorted((c.key, c.limit, c.window, c.source) for c in admission.counters)


def count_commands(client: Any, sha: str) -> list[int]:
    """Wrap the client's command path (no pipelines here): [commands sent, of which
    EVALSHA of limits.lua, the stored-limits read]."""
    sent = [0, 0]
    original = client.execute_command

    def counted(*args: Any, **options: Any) -> Any:
        sent[0] += 1
        if len(args) > 1 and args[0] == "EVALSHA" and args[1] == sha:
            sent[1] += 1
        return original(*args, **options)

    client.execute_command = counted
    return sent


def build(client: redis.Redis) -> tuple[dict[str, Config], float]:
    """The six configurations, their limits stored; returns them and the seconds the
    10,000 ``bg.set_plan`` calls took."""

    def store(name: str, refresh_s: float = 1.0) -> RedisStore:
        return RedisStore(client, prefix=f"{PREFIX}{name}", limits_refresh_s=refresh_s)

    one = ("acme",)
    many = tuple(f"t-{i:05d}" for i in range(TENANTS))
    plans = bg.Policy(plans={"pro": [TENANT, USER]})
    configs = {
        "code": Config("code", store("code"), bg.Policy(limits=CODE_LIMITS), one),
        "store": Config("store", store("store"), bg.Policy(), one),
        "store_reread": Config("store_reread", store("store", 0.0), bg.Policy(), one),
        "many_code": Config("many_code", store("mcode"), bg.Policy(limits=CODE_LIMITS), many),
        "many_store": Config("many_store", store("mstore"), plans, many),
        "many_reread": Config("many_reread", store("mstore", 0.0), plans, many),
    }
    configs["store"].use()
    bg.set_limit(GLOBAL)
    bg.set_limit(keyed(TENANT, "acme"))
    bg.set_limit(keyed(USER, "u-1"))
    bg.set_limit(keyed(FEATURE, "chat"))
    configs["many_store"].use()
    bg.set_limit(GLOBAL)
    bg.set_limit(keyed(FEATURE, "chat"))
    started = time.perf_counter()
    for i in range(PLANNED):  # the 1,000 tenants that call are among them
        bg.set_plan(tenant=f"t-{i:05d}", plan="pro")
    planning_s = time.perf_counter() - started
    return configs, planning_s


def full_reads(configs: dict[str, Config], times: int = 5) -> float:
    """Milliseconds of one re-read of the stored limits after a write (10,000 plans and 2
    limits sent and parsed, once per write per process at its next refresh), median."""
    writer, reader = configs["many_store"], configs["many_reread"].store
    took = []
    for i in range(times):
        writer.use()
        bg.set_plan(tenant=f"t-{i:05d}", plan="pro")  # a write: the version moves
        started = time.perf_counter()
        book = reader.limit_book()
        took.append((time.perf_counter() - started) * 1e3)
        assert len(book.plans) == PLANNED, len(book.plans)
    return statistics.median(took)


def check_same_counters(configs: dict[str, Config]) -> dict[str, list[str]]:
    """Every configuration reserves on the same counters, only their source differs."""
    sources: dict[str, list[str]] = {}
    for names, tenant in (
        (("code", "store", "store_reread"), "acme"),
        (("many_code", "many_store", "many_reread"), "t-00007"),
    ):
        seen = {name: configs[name].counters(tenant) for name in names}
        shapes = {name: [c[:3] for c in counters] for name, counters in seen.items()}
        first = shapes[names[0]]
        assert len(first) == 4, first
        for name in names[1:]:
            assert shapes[name] == first, (name, shapes[name], first)
        sources.update({name: [c[3] for c in counters] for name, counters in seen.items()})
    assert set(sources["code"]) == {"code"} and set(sources["store"]) == {"store"}, sources
    assert "plan:pro" in sources["many_store"], sources
    return sources


# -- timing -------------------------------------------------------------------------
def run(
    configs: dict[str, Config], sent: list[int], ops: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Per round and configuration: the median and the mean µs of a call, client CPU µs
    per call, round trips per call and stored-limit reads. A round runs every
    configuration in chunks of ``CHUNK`` calls, alternating (in reverse order every
    other pass), so a noisy moment of this shared machine hits them all alike; each
    call is timed on its own and the median taken, which a burst of another process's
    work on the CPU or the Redis server does not move. The mean includes everything:
    the switch to a configuration, the re-plan after it and the re-read of the stored
    limits when ``limits_refresh_s`` has passed (each store's clock runs on while the
    others are in use: about one read per second of the run, see the reads column)."""
    samples: dict[str, dict[str, list[float]]] = {
        name: {"us": [], "mean_us": [], "cpu_us": [], "trips": [], "reads": []} for name in configs
    }
    cursor = dict.fromkeys(configs, 0)
    for config in configs.values():  # warm: scripts loaded, every tenant's counters made
        config.use()
        warm = max(200, len(config.tenants))
        config.loop(warm)
        cursor[config.name] = warm
    chunks = [CHUNK] * (ops // CHUNK) + ([ops % CHUNK] if ops % CHUNK else [])
    order = list(configs.items())
    for _ in range(rounds):
        calls: dict[str, list[int]] = {name: [] for name in configs}
        spent = {name: [0.0, 0.0, 0, 0] for name in configs}  # wall s, CPU s, sent, reads
        gc.collect()
        for i, n in enumerate(chunks):
            for name, config in order if i % 2 == 0 else order[::-1]:
                sent[0] = sent[1] = 0
                started, cpu = time.perf_counter(), time.process_time()
                config.use()
                config.loop(n, cursor[name], calls[name])
                took, cpu = time.perf_counter() - started, time.process_time() - cpu
                cursor[name] += n
                total = spent[name]
                total[0] += took
                total[1] += cpu
                total[2] += sent[0]
                total[3] += sent[1]
        for name, (took, cpu, commands, reads) in spent.items():
            samples[name]["us"].append(statistics.median(calls[name]) / 1e3)
            samples[name]["mean_us"].append(took / ops * 1e6)
            samples[name]["cpu_us"].append(cpu / ops * 1e6)
            samples[name]["trips"].append(commands / ops)
            samples[name]["reads"].append(reads)
    return samples


def planning(n: int, rounds: int) -> dict[str, dict[str, float]]:
    """The planning step alone (no I/O): ``plan_counters`` + ``plan_caps`` of a call, 1,000
    tenants cycling (every call re-plans), against books of growing size."""
    many = [Attribution(tenant=f"t-{i:05d}", user="u-1", feature="chat") for i in range(TENANTS)]
    plans = bg.Policy(plans={"pro": [TENANT, USER]})
    stored = (GLOBAL, keyed(FEATURE, "chat"))
    planned = {("tenant", f"t-{i:05d}"): "pro" for i in range(PLANNED)}
    more = {("tenant", f"y-{i:06d}"): "pro" for i in range(9 * PLANNED)}
    elsewhere = tuple(keyed(TENANT, f"x-{i:06d}") for i in range(10 * PLANNED))
    books = {
        "code": (bg.Policy(limits=CODE_LIMITS), EMPTY_BOOK),
        "plans_10k": (plans, LimitBook("1", stored, planned)),
        "plans_100k_limits_100k": (plans, LimitBook("2", stored + elsewhere, planned | more)),
    }

    def loop(policy: bg.Policy, book: LimitBook) -> Callable[[int], None]:
        def plan(k: int) -> None:
            for i in range(k):
                who = many[i % TENANTS]
                plan_counters(policy, (), who, None, book)
                plan_caps(policy, (), who, book)

        return plan

    loops = {name: loop(*pair) for name, pair in books.items()}
    shapes = {
        name: sorted((c.key, c.limit) for c in plan_counters(p, (), many[7], None, b))
        for name, (p, b) in books.items()
    }
    assert all(len(v) == 4 and v == shapes["code"] for v in shapes.values()), shapes
    for plan in loops.values():
        plan(TENANTS)
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, plan in loops.items():
            gc.collect()
            started = time.perf_counter()
            plan(n)
            samples[name].append((time.perf_counter() - started) / n * 1e6)
    return {
        name: {
            "us": statistics.median(s),
            "entries": len(books[name][1].limits) + len(books[name][1].plans),
            "x_code": ratio(s, samples["code"]),
        }
        for name, s in samples.items()
    }


def ratio(top: Sequence[float], bottom: Sequence[float]) -> float:
    """Median of the per-round ratios."""
    return statistics.median(t / b for t, b in zip(top, bottom, strict=True))


BASE = {
    "code": "code",
    "store": "code",
    "store_reread": "code",
    "many_code": "code",
    "many_store": "many_code",
    "many_reread": "many_code",
}


def summarise(samples: dict[str, dict[str, list[float]]], ops: int) -> dict[str, dict[str, Any]]:
    """Medians of the rounds; round trips and reads summed over every timed call."""
    return {
        name: {
            "us": statistics.median(s["us"]),
            "mean_us": statistics.median(s["mean_us"]),
            "mean_x_base": ratio(s["mean_us"], samples[BASE[name]]["mean_us"]),
            "trips": statistics.fmean(s["trips"]),
            "reads": int(sum(s["reads"])),
            "calls": ops * len(s["us"]),
            "base": BASE[name],
            "x_base": ratio(s["us"], samples[BASE[name]]["us"]),
            "cpu_us": statistics.median(s["cpu_us"]),
            "cpu_x_base": ratio(s["cpu_us"], samples[BASE[name]]["cpu_us"]),
        }
        for name, s in samples.items()
    }


def cleanup(client: redis.Redis) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(f"{PREFIX}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


# -- report -------------------------------------------------------------------------
NAMES = {
    "code": "(a) 4 code limits, tenant acme",
    "store": "(b) 4 stored limits (`bg.set_limit`), refresh 1 s",
    "store_reread": "(c) as (b), `limits_refresh_s=0` (info)",
    "many_code": "(a') 4 code limits, 1,000 tenants cycling",
    "many_store": "(b') 10,000 tenants on a plan + 2 stored, 1,000 cycling",
    "many_reread": "(c') as (b'), `limits_refresh_s=0` (info)",
}
LABELS = {"code": "(a)", "many_code": "(a')"}
TARGETED = ("store", "many_store")


def report(results: dict[str, Any]) -> str:
    rows_in = results["results"]
    out = [
        header(
            "Limits as data: 4 stored limits vs 4 code limits, Redis",
            [
                f"budgetguard {bg.__version__}",
                f"redis-server {results['redis_version']}, redis-py {redis.__version__}",
                f"{results['ops']:,} calls x {results['rounds']} interleaved rounds",
            ],
        ),
        "",
        "Per call: `with bg.spend_limit(tenant, user, feature)` + `bg.admit_cost` + "
        "`settle_nanos`, sequential, one connection; 4 counters (global day, tenant month, "
        "user day, feature day), identical in every row (checked), in two hash slots "
        f"(global, tenant). The {PLANNED:,} `bg.set_plan` calls took "
        f"{results['set_plan_s']:.1f} s; after a write, the next re-read of the book "
        f"({PLANNED:,} plans + 2 limits) takes {results['full_read_ms']:.1f} ms (once per "
        "write per process; an unchanged book is re-read as its version alone).",
        "",
    ]
    rows = []
    for name, row in rows_in.items():
        first = name == row["base"]
        verdict = ""
        if name in TARGETED:
            verdict = "PASS" if row["x_base"] <= TARGET else "FAIL"
        rows.append(
            [
                NAMES[name],
                f"{row['us']:.1f}",
                "" if first else f"{row['x_base']:.3f}x {LABELS[row['base']]}",
                verdict,
                f"{row['mean_us']:.1f}",
                "" if first else f"{row['mean_x_base']:.3f}x",
                f"{row['cpu_us']:.1f}",
                "" if first else f"{row['cpu_x_base']:.3f}x",
                f"{row['trips']:.4f}",
                f"{row['reads']:,} / {row['calls']:,}",
            ]
        )
    out.append(
        table(
            [
                "configuration",
                "median µs / call",
                "ratio",
                f"<= {TARGET}x",
                "mean µs",
                "ratio",
                "client CPU µs",
                "ratio",
                "round trips / call",
                "limit reads / calls",
            ],
            rows,
        )
    )
    out.append("")
    out.append(
        f"target: (b) / (a) <= {TARGET}x ((b') against (a')), the median over rounds of the "
        "ratio of per-call medians. Calls alternate between configurations every "
        f"{CHUNK} calls. The mean includes the rare slow calls the median leaves out: the "
        "re-read of the stored limits, which every RedisStore does at most once per "
        "`limits_refresh_s` (1 s) per process, not per call, and the re-plan after each "
        "switch. Client CPU: this process's user + system time per call (Python and its "
        "socket calls, not Redis's)."
    )
    plan_names = {
        "code": "4 code limits, nothing stored",
        "plans_10k": f"{PLANNED:,} tenants on a plan + 2 stored limits",
        "plans_100k_limits_100k": "100,000 tenants on a plan + 100,002 stored limits",
    }
    out += [
        "",
        "Planning alone (`plan_counters` + `plan_caps`, no I/O), 1,000 tenants cycling so "
        "every call re-plans; the same 4 counters in every row (checked):",
        "",
        table(
            ["book", "entries", "µs / plan", "x code"],
            [
                [
                    plan_names[name],
                    f"{row['entries']:,}",
                    f"{row['us']:.2f}",
                    f"{row['x_code']:.3f}x",
                ]
                for name, row in results["planning"].items()
            ],
        ),
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ops", type=int, default=None, help="calls per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="500 calls x 3 rounds")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/10")
    args = parser.parse_args()
    ops = args.ops or (500 if args.quick else 2000)
    rounds = args.rounds or (3 if args.quick else 7)
    client = redis.Redis.from_url(args.url)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"(Redis at {args.url} unreachable: {exc}; bench_limits skipped)", file=sys.stderr)
        return 0
    started = time.perf_counter()
    try:
        configs, set_plan_s = build(client)
        sources = check_same_counters(configs)
        full_read_ms = full_reads(configs)
        sent = count_commands(client, client.register_script(script_source("limits")).sha)
        samples = run(configs, sent, ops, rounds)
        planned = planning(ops * 10, rounds)
    finally:
        bg.reset()
        cleanup(client)
    results = {
        "machine": machine(),
        "redis_version": client.info("server").get("redis_version"),
        "url": args.url,
        "ops": ops,
        "rounds": rounds,
        "set_plan_s": set_plan_s,
        "full_read_ms": full_read_ms,
        "seconds": time.perf_counter() - started,
        "sources": sources,
        "results": summarise(samples, ops),
        "planning": planned,
        "samples": samples,
    }
    client.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
