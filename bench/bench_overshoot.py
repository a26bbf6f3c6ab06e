"""Overshoot under concurrency: many workers share one $1 budget; who spends past it?

    /tmp/venv/bin/python bench/bench_overshoot.py [--quick] [--json] \\
        [--url redis://127.0.0.1:6379/12] [--rounds N]

The database named by ``--url`` is FLUSHED before each Redis contender: give
the bench a database of its own.

Workload (identical for every contender): a worker makes simulated gpt-4o
calls. Each call has 200-1200 input tokens and a ``max_tokens`` of 50-1700,
so its worst case is $0.001-$0.02 at list price ($2.50 / $10 per 1M tokens);
the reply uses 0..max_tokens output tokens, so the actual cost is random and
never above the estimate. The provider call is a 1-5 ms sleep between the
budget check and the spend. A refused worker waits 1-5 ms and tries a new
call; it stops after 5 refusals in a row, so every round runs the budget dry.
Each round starts all workers together (a barrier) on a fresh $1 budget.

Measured per round: the spend that went out (sum of the actual cost of every
call that was let through, integer nano-USD; what the provider would bill),
overshoot = max(0, spend - limit) / limit, utilisation = min(spend, limit) /
limit. The store's own record of the spend is read back and checked against
it.

Contenders:
- budgetguard, MemoryStore (threads, asyncio tasks, one process) and
  RedisStore / AsyncRedisStore (several processes), through the public API:
  ``with bg.budget(tenant=..., estimate=worst_case) as run: call();
  run.record(usd=actual)`` (``async with`` for tasks), policy
  ``Limit(scope="tenant", usd=1, window="total")``.
- check-then-spend on the same Redis: ``GET`` spent; refuse if spent +
  worst case > limit; call; ``INCRBY`` actual (integers). The careful form of
  the pattern: the common ``spent < limit`` check would overshoot by up to
  one call even with one worker. A one-worker row is the control: without
  concurrency this check never overshoots, so what the other rows show is
  the race.
- LiteLLM ``BudgetManager`` in its default ``client_type="local"`` mode: one
  instance per process, spend in a dict (persisted to ``./user_cost.json``
  by a thread per update; the bench runs it in a temporary directory).
  Nothing is shared between processes (``"hosted"`` posts to
  api.litellm.ai), so it runs in one process, threads or tasks. It gets the
  same worst-case-aware check: ``get_current_cost(user) + worst case <=
  get_total_budget(user)`` (its docs check only ``current <= total``),
  then ``update_cost(user, completion_obj=...)`` with a ``ModelResponse``
  carrying the call's usage (LiteLLM prices it, in floats).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import queue
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map

from _report import header, machine, table

MODEL = "gpt-4o"
RATE_IN = 2_500  # nano-USD per input token: $2.50 per 1M
RATE_OUT = 10_000  # nano-USD per output token: $10 per 1M
LIMIT = 1_000_000_000  # $1 in nano-USD
NANOS = 1_000_000_000
MAX_REFUSALS = 5  # a worker stops after this many refusals in a row
MAX_CALLS = 10_000  # per worker and round: a safety net, never reached when the budget works
BARRIER_TIMEOUT_S = 120.0

Kind = Literal["bg-memory", "bg-redis", "baseline", "litellm"]


@dataclass(frozen=True, slots=True)
class Call:
    """One simulated LLM call: what it may cost (estimate) and what it does cost (actual)."""

    input_tokens: int
    max_tokens: int
    output_tokens: int
    latency_s: float
    backoff_s: float

    @property
    def estimate(self) -> int:
        return self.input_tokens * RATE_IN + self.max_tokens * RATE_OUT

    @property
    def actual(self) -> int:
        return self.input_tokens * RATE_IN + self.output_tokens * RATE_OUT


def draw(rng: random.Random) -> Call:
    max_tokens = rng.randint(50, 1700)
    return Call(
        input_tokens=rng.randint(200, 1200),
        max_tokens=max_tokens,
        output_tokens=rng.randint(0, max_tokens),
        latency_s=rng.uniform(0.001, 0.005),
        backoff_s=rng.uniform(0.001, 0.005),
    )


def usd(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    kind: Kind
    procs: int
    threads: int = 0  # per process; 0 means asyncio tasks
    tasks: int = 0  # per process
    round_share: float = 1.0  # a slow control row runs a tenth of the rounds

    @property
    def workers(self) -> str:
        per = (
            f"{self.threads} thread{'s' if self.threads > 1 else ''}"
            if self.threads
            else f"{self.tasks} asyncio tasks"
        )
        return f"{self.procs} procs \N{MULTIPLICATION SIGN} {per}" if self.procs > 1 else per

    @property
    def uses_redis(self) -> bool:
        return self.kind in ("bg-redis", "baseline")


CONTENDERS = (
    Contender("budgetguard MemoryStore", "bg-memory", procs=1, threads=32),
    Contender("budgetguard MemoryStore", "bg-memory", procs=1, tasks=64),
    Contender("budgetguard RedisStore", "bg-redis", procs=8, threads=4),
    Contender("budgetguard AsyncRedisStore", "bg-redis", procs=4, tasks=16),
    Contender("check-then-spend (Redis GET/INCRBY)", "baseline", procs=8, threads=4),
    Contender(  # the control: without concurrency the same check never overshoots
        "check-then-spend (Redis GET/INCRBY)", "baseline", procs=1, threads=1, round_share=0.1
    ),
    Contender("check-then-spend (redis.asyncio GET/INCRBY)", "baseline", procs=4, tasks=16),
    Contender("LiteLLM BudgetManager (local)", "litellm", procs=1, threads=32),
    Contender("LiteLLM BudgetManager (local)", "litellm", procs=1, tasks=64),
)


@dataclass(slots=True)
class Tally:
    admitted: int = 0
    denied: int = 0
    billed: int = 0  # nano-USD: actual cost of every call let through

    def add(self, other: Tally) -> None:
        self.admitted += other.admitted
        self.denied += other.denied
        self.billed += other.billed


# -- the contenders' budget checks ---------------------------------------------
class Backend(Protocol):
    def open_round(self, key: str) -> None: ...
    def attempt(self, key: str, call: Call) -> bool: ...
    async def aattempt(self, key: str, call: Call) -> bool: ...
    def recorded(self, key: str) -> tuple[int, int]:
        """(spent, held) in nano-USD as the contender's own store sees it."""
        ...


class Budgetguard:
    """The public API: ``bg.budget(estimate=...)`` reserves, ``run.record(usd=...)`` settles."""

    def __init__(self, store_url: str) -> None:
        import budgetguard as bg

        self.bg = bg
        bg.configure(
            store=store_url,
            policy=bg.Policy(
                limits=[bg.Limit(scope="tenant", usd=1, window="total")], on_exceed="raise"
            ),
        )

    def open_round(self, key: str) -> None:
        pass

    def attempt(self, key: str, call: Call) -> bool:
        try:
            with self.bg.budget(tenant=key, estimate=usd(call.estimate)) as run:
                time.sleep(call.latency_s)  # the provider call
                run.record(usd=usd(call.actual))
        except self.bg.BudgetExceeded:
            return False
        return True

    async def aattempt(self, key: str, call: Call) -> bool:
        try:
            async with self.bg.budget(tenant=key, estimate=usd(call.estimate)) as run:
                await asyncio.sleep(call.latency_s)
                run.record(usd=usd(call.actual))
        except self.bg.BudgetExceeded:
            return False
        return True

    def recorded(self, key: str) -> tuple[int, int]:
        status = self.bg.status("tenant", key)
        return int(status.spent * NANOS), int(status.held * NANOS)


class CheckThenSpend:
    """GET spent, compare, call, INCRBY actual: the race is the call in between."""

    def __init__(self, url: str) -> None:
        import redis
        import redis.asyncio

        self.url = url
        self.client = redis.Redis.from_url(url)
        self.aclient: redis.asyncio.Redis | None = None

    @staticmethod
    def _key(key: str) -> str:
        return f"cts:{key}:spent"

    def open_round(self, key: str) -> None:
        pass

    def attempt(self, key: str, call: Call) -> bool:
        spent = int(self.client.get(self._key(key)) or 0)
        if spent + call.estimate > LIMIT:
            return False
        time.sleep(call.latency_s)
        self.client.incrby(self._key(key), call.actual)
        return True

    async def aattempt(self, key: str, call: Call) -> bool:
        import redis.asyncio

        if self.aclient is None:  # bound to the running loop: made inside it
            self.aclient = redis.asyncio.Redis.from_url(self.url)
        spent = int(await self.aclient.get(self._key(key)) or 0)
        if spent + call.estimate > LIMIT:
            return False
        await asyncio.sleep(call.latency_s)
        await self.aclient.incrby(self._key(key), call.actual)
        return True

    def recorded(self, key: str) -> tuple[int, int]:
        return int(self.client.get(self._key(key)) or 0), 0


class LiteLLMBudget:
    """``litellm.BudgetManager``, local mode: a dict in this process."""

    def __init__(self) -> None:
        import litellm
        from litellm.budget_manager import BudgetManager

        litellm.suppress_debug_info = True
        self.litellm = litellm
        self.manager: Any = BudgetManager(project_name="bench_overshoot")  # client_type="local"
        self.thread_errors = 0
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:  # its save-to-json threads
            self.thread_errors += 1
            if self.thread_errors == 1:
                previous(args)

        threading.excepthook = hook

    def open_round(self, key: str) -> None:
        self.manager.create_budget(total_budget=LIMIT / NANOS, user=key)

    def _fits(self, key: str, call: Call) -> bool:
        current = self.manager.get_current_cost(user=key)
        return bool(current + call.estimate / NANOS <= self.manager.get_total_budget(key))

    def _spend(self, key: str, call: Call) -> None:
        usage = self.litellm.Usage(
            prompt_tokens=call.input_tokens,
            completion_tokens=call.output_tokens,
            total_tokens=call.input_tokens + call.output_tokens,
        )
        response = self.litellm.ModelResponse(model=MODEL, usage=usage)
        self.manager.update_cost(user=key, completion_obj=response)

    def attempt(self, key: str, call: Call) -> bool:
        if not self._fits(key, call):
            return False
        time.sleep(call.latency_s)
        self._spend(key, call)
        return True

    async def aattempt(self, key: str, call: Call) -> bool:
        if not self._fits(key, call):
            return False
        await asyncio.sleep(call.latency_s)
        self._spend(key, call)
        return True

    def recorded(self, key: str) -> tuple[int, int]:
        return round(self.manager.get_current_cost(user=key) * NANOS), 0


def make_backend(kind: Kind, url: str) -> Backend:
    if kind == "bg-memory":
        return Budgetguard("memory://")
    if kind == "bg-redis":
        return Budgetguard(url)
    if kind == "baseline":
        return CheckThenSpend(url)
    return LiteLLMBudget()


# -- workers -------------------------------------------------------------------
def worker(attempt: Callable[[Call], bool], rng: random.Random, tally: Tally) -> None:
    refusals = 0
    for _ in range(MAX_CALLS):
        call = draw(rng)
        if attempt(call):
            tally.admitted += 1
            tally.billed += call.actual
            refusals = 0
            continue
        tally.denied += 1
        refusals += 1
        if refusals >= MAX_REFUSALS:
            return
        time.sleep(call.backoff_s)


async def aworker(
    attempt: Callable[[Call], Awaitable[bool]], rng: random.Random, tally: Tally
) -> None:
    refusals = 0
    for _ in range(MAX_CALLS):
        call = draw(rng)
        if await attempt(call):
            tally.admitted += 1
            tally.billed += call.actual
            refusals = 0
            continue
        tally.denied += 1
        refusals += 1
        if refusals >= MAX_REFUSALS:
            return
        await asyncio.sleep(call.backoff_s)


def round_key(contender: int, n: int) -> str:
    return f"c{contender}-r{n}"


def rng_for(seed: int, proc: int, worker_n: int, n: int) -> random.Random:
    """The same draws for the same worker slot in every contender."""
    return random.Random(f"{seed}/{proc}/{worker_n}/{n}")


def thread_rounds(
    backend: Backend, spec: Contender, index: int, proc: int, rounds: int, seed: int, sync: Any
) -> list[Tally]:
    results = []
    for n in range(rounds):
        key = round_key(index, n)
        if proc == 0:
            backend.open_round(key)
        sync.wait(BARRIER_TIMEOUT_S)
        tallies = [Tally() for _ in range(spec.threads)]
        threads = [
            threading.Thread(
                target=worker,
                args=(
                    lambda call, key=key: backend.attempt(key, call),
                    rng_for(seed, proc, w, n),
                    tallies[w],
                ),
            )
            for w in range(spec.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        total = Tally()
        for tally in tallies:
            total.add(tally)
        results.append(total)
    return results


async def task_rounds(
    backend: Backend, spec: Contender, index: int, proc: int, rounds: int, seed: int, sync: Any
) -> list[Tally]:
    results = []
    for n in range(rounds):
        key = round_key(index, n)
        if proc == 0:
            backend.open_round(key)
        await asyncio.to_thread(sync.wait, BARRIER_TIMEOUT_S)

        def attempt(call: Call, key: str = key) -> Awaitable[bool]:
            return backend.aattempt(key, call)

        tallies = [Tally() for _ in range(spec.tasks)]
        await asyncio.gather(
            *(aworker(attempt, rng_for(seed, proc, w, n), tallies[w]) for w in range(spec.tasks))
        )
        total = Tally()
        for tally in tallies:
            total.add(tally)
        results.append(total)
    return results


def child(
    spec: Contender,
    index: int,
    proc: int,
    rounds: int,
    seed: int,
    url: str,
    workdir: str,
    sync: multiprocessing.synchronize.Barrier,
    out: multiprocessing.Queue[dict[str, Any]],
) -> None:
    """One process of a contender: every round, then (process 0) the store's record."""
    try:
        os.chdir(workdir)  # LiteLLM writes ./user_cost.json
        backend = make_backend(spec.kind, url)
        if spec.threads:
            tallies = thread_rounds(backend, spec, index, proc, rounds, seed, sync)
        else:
            tallies = asyncio.run(task_rounds(backend, spec, index, proc, rounds, seed, sync))
        sync.wait(BARRIER_TIMEOUT_S)  # everyone done: the record is final
        recorded = (
            [backend.recorded(round_key(index, n)) for n in range(rounds)] if proc == 0 else []
        )
        errors = backend.thread_errors if isinstance(backend, LiteLLMBudget) else 0
        out.put(
            {
                "proc": proc,
                "tallies": [asdict(t) for t in tallies],
                "recorded": recorded,
                "thread_errors": errors,
            }
        )
    except BaseException:
        sync.abort()
        out.put({"proc": proc, "error": traceback.format_exc()})


# -- orchestration -------------------------------------------------------------
@dataclass
class Row:
    contender: str
    workers: str
    kind: str
    rounds: int
    seconds: float
    admitted: list[int] = field(default_factory=list)
    denied: list[int] = field(default_factory=list)
    billed: list[int] = field(default_factory=list)  # nano-USD per round
    recorded_spent: list[int] = field(default_factory=list)
    recorded_held: list[int] = field(default_factory=list)
    thread_errors: int = 0
    error: str | None = None

    @property
    def overshoot(self) -> list[float]:
        return [max(0, b - LIMIT) / LIMIT * 100 for b in self.billed]

    @property
    def utilisation(self) -> list[float]:
        return [min(b, LIMIT) / LIMIT * 100 for b in self.billed]


def flush(url: str) -> str | None:
    """FLUSHDB the bench's database; the reason when Redis cannot be used."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run_contender(spec: Contender, index: int, rounds: int, seed: int, url: str) -> Row:
    rounds = max(1, round(rounds * spec.round_share))
    row = Row(spec.name, spec.workers, spec.kind, rounds, 0.0)
    if spec.uses_redis and (reason := flush(url)):
        row.error = "skipped: Redis unavailable"
        print(f"{spec.name}: Redis at {url} unavailable ({reason})", file=sys.stderr)
        return row
    ctx = multiprocessing.get_context("spawn")
    sync = ctx.Barrier(spec.procs)
    out: multiprocessing.Queue[dict[str, Any]] = ctx.Queue()
    workdir = tempfile.mkdtemp(prefix="bench_overshoot_")
    started = time.perf_counter()
    procs = [
        ctx.Process(
            target=child, args=(spec, index, p, rounds, seed, url, workdir, sync, out), daemon=True
        )
        for p in range(spec.procs)
    ]
    for proc in procs:
        proc.start()
    reports: list[dict[str, Any]] = []
    try:
        while len(reports) < spec.procs:
            reports.append(out.get(timeout=BARRIER_TIMEOUT_S * 2))
    except queue.Empty:
        row.error = "timed out waiting for the workers"
    for proc in procs:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    row.seconds = time.perf_counter() - started
    shutil.rmtree(workdir, ignore_errors=True)
    failed = [r["error"] for r in reports if "error" in r]
    if failed:
        row.error = failed[0].strip().splitlines()[-1]
        print(failed[0], file=sys.stderr)
    if row.error:
        return row
    for n in range(rounds):
        total = Tally()
        for report in reports:
            total.add(Tally(**report["tallies"][n]))
        row.admitted.append(total.admitted)
        row.denied.append(total.denied)
        row.billed.append(total.billed)
    first = next(r for r in reports if r["proc"] == 0)
    row.recorded_spent = [spent for spent, _ in first["recorded"]]
    row.recorded_held = [held for _, held in first["recorded"]]
    row.thread_errors = sum(r["thread_errors"] for r in reports)
    return row


def checks(row: Row) -> list[str]:
    """What must hold; a budgetguard failure is a bug to investigate, not noise."""
    problems: list[str] = []
    if row.error:
        return problems
    if row.kind.startswith("bg-"):
        if (over := sum(b > LIMIT for b in row.billed)) > 0:
            worst = max(row.billed) - LIMIT
            problems.append(f"overshoot in {over} rounds, worst {worst} nano-USD past the limit")
        if min(row.utilisation) < 95:
            problems.append(f"utilisation {min(row.utilisation):.2f}% < 95% in some round")
        if any(h != 0 for h in row.recorded_held):
            problems.append(f"held after all settled: {row.recorded_held}")
    if row.kind == "litellm":  # floats: compare to a micro-dollar
        if any(abs(s - b) > 1000 for s, b in zip(row.recorded_spent, row.billed, strict=True)):
            problems.append("its recorded spend differs from the calls let through")
    elif row.recorded_spent != row.billed:
        problems.append(f"store records {row.recorded_spent}, calls billed {row.billed}")
    return problems


def mean(values: list[float] | list[int]) -> float:
    return sum(values) / len(values)


def render(rows: list[Row], rounds: int, seed: int, url: str, quick: bool) -> str:
    extra = [f"up to {rounds} rounds per row" + (" (--quick)" if quick else ""), f"seed {seed}"]
    try:
        import redis

        info = redis.Redis.from_url(url, socket_connect_timeout=2).info("server")
        extra.append(f"redis-server {info.get('redis_version')}")
    except Exception:
        extra.append("redis-server unavailable")
    try:
        from importlib.metadata import version

        extra.append(f"litellm {version('litellm')}")
    except Exception:
        pass
    body = []
    for row in rows:
        if row.error:
            body.append([row.contender, row.workers, row.error, "", "", "", "", "", ""])
            continue
        body.append(
            [
                row.contender,
                row.workers,
                f"{mean(row.admitted):.1f}",
                f"{mean(row.billed) / NANOS:.4f} ({max(row.billed) / NANOS:.4f})",
                f"{mean(row.overshoot):.2f} ({max(row.overshoot):.2f})",
                f"{mean(row.utilisation):.2f} ({min(row.utilisation):.2f})",
                f"{mean(row.denied):.1f}",
                str(row.rounds),
                f"{row.seconds:.1f}",
            ]
        )
    headers = [
        "contender",
        "workers",
        "calls admitted",
        "committed spend $ mean (max)",
        "overshoot % mean (max)",
        "utilisation % mean (min)",
        "denied calls",
        "rounds",
        "time s",
    ]
    lines = [
        header("Overshoot under concurrency: workers sharing one $1 budget", extra),
        "",
        table(headers, body),
        "",
        "Per round of a fresh $1 budget; calls and denials are means per round. "
        "Spend = actual cost of every call let through (what the provider bills). "
        "Time includes starting the processes and imports (LiteLLM: ~5 s).",
    ]
    notes = []
    for row in rows:
        for problem in checks(row):
            notes.append(f"- CHECK FAILED, {row.contender} ({row.workers}): {problem}")
        if row.thread_errors:
            notes.append(
                f"- {row.contender} ({row.workers}): {row.thread_errors} exceptions in "
                "its background save threads"
            )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (~20 s)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per contender")
    parser.add_argument(
        "--url", default="redis://127.0.0.1:6379/12", help="Redis database, FLUSHED by the bench"
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 30)
    rows = []
    for index, spec in enumerate(CONTENDERS):
        rows.append(run_contender(spec, index, rounds, args.seed, args.url))
        if not args.json:
            print(f"  done: {spec.name}, {spec.workers} ({rows[-1].seconds:.1f}s)", file=sys.stderr)
    flush(args.url)  # leave the bench's database empty
    if args.json:
        payload = {
            "machine": machine(),
            "rounds": rounds,
            "seed": args.seed,
            "limit_nanos": LIMIT,
            "rows": [
                {
                    **asdict(row),
                    "overshoot_pct": row.overshoot,
                    "utilisation_pct": row.utilisation,
                    "checks_failed": checks(row),
                }
                for row in rows
            ],
        }
        print(json.dumps(payload, indent=2))
    else:
        print(render(rows, rounds, args.seed, args.url, args.quick))
    if any(checks(row) for row in rows if row.kind.startswith("bg-")):
        sys.exit(1)


if __name__ == "__main__":
    main()
