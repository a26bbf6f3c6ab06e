"""Running a trial: every (repeat, case, model) call, bounded in parallel, under one budget.

Calls are made case by case, each case on every model in turn, so a trial that
its budget stops early still compares the models on (nearly) the same cases.
The whole trial runs in one ``bg.spend_limit(usd=..., feature="trial",
on_exceed="raise")``: a call that would pass the limit is refused before it is
sent (``BudgetExceeded``), nothing more is started, the calls already in
flight finish, and the result says it stopped. Each call's cost, tokens and
latency are its ``CallRecord``'s (a listener added for the trial's duration),
so the figures are exactly what budgetguard charged.

A check that raises stops the trial too: its error (``TrialError``) names the
check, the case's line and the model, and no result is returned - a half-
checked table would mislead. Calls already made were real spend: they stay in
the ledger. A provider error (HTTP status, connection) is one wrong answer,
counted in the row's ``errors``.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from .._core.errors import BudgetExceeded, ConfigurationError
from .._core.money import check_nanos, format_usd, nanos_to_usd, usd_to_nanos
from .._core.records import CallRecord
from .._engine.config import configure, current
from .._engine.guard import spend_limit
from .cases import Case, Check, TrialError, load_cases, resolve_check
from .clients import Target, close, targets
from .results import Outcome, TrialResult, pick, summarize

log = logging.getLogger("budgetguard")

_OWN_LIMIT = "stopped: the trial's own limit"
"""Placeholder for a refusal by the trial's ``usd`` limit, reworded with its figures."""

__all__ = ["trial"]

_slot: contextvars.ContextVar[list[CallRecord] | None] = contextvars.ContextVar(
    "budgetguard_trial_slot", default=None
)


_extras: contextvars.ContextVar[tuple[Callable[[CallRecord], None], ...]] = contextvars.ContextVar(
    "budgetguard_trial_listeners", default=()
)
"""The listeners one trial was given (``listeners=``: the CLI's ledger), for its calls
only."""
_installing = threading.Lock()


def _capture(record: CallRecord) -> None:
    """The trial's listener, installed once per process and never removed (two trials
    at once must neither count a record twice nor drop each other's listeners): a
    record goes to the call (job) that made it, and to that trial's own listeners."""
    slot = _slot.get()
    if slot is not None:
        slot.append(record)
    for listener in _extras.get():
        try:
            listener(record)
        except Exception:
            log.exception("budgetguard: trial listener %r failed; the call is unaffected", listener)


def _install_capture() -> None:
    with _installing:
        installed = current().listeners
        if _capture not in installed:
            configure(listeners=[*installed, _capture])


class _Progress:
    def __init__(self, planned: int, out: TextIO | None) -> None:
        self.planned, self.out, self.done = planned, out, 0

    def step(self, spent: Decimal) -> None:
        self.done += 1
        if self.out is not None:
            self.out.write(f"\rtrial: {self.done}/{self.planned} calls, ${spent:f} spent ")
            self.out.flush()

    def end(self) -> None:
        if self.out is not None and self.done:
            self.out.write("\n")
            self.out.flush()


def _one(target: Target, case: Case, check: Check, max_tokens: int) -> Outcome:
    """One call and its verdict (runs in a worker, in a copy of the trial's context)."""
    records: list[CallRecord] = []
    _slot.set(records)
    started = time.perf_counter()
    error: str | None = None
    answer = ""
    try:
        answer = target.ask(case, max_tokens)
    except BudgetExceeded:
        raise
    except Exception as exc:  # a provider error: a wrong answer, counted as an error
        if isinstance(exc, TrialError):
            raise
        error = f"{type(exc).__name__}: {exc}"
    latency = time.perf_counter() - started
    settled = [r for r in records if r.outcome != "denied"]
    cost = sum(r.cost for r in settled)
    usage = [r.usage for r in settled if r.usage is not None]
    correct = False
    if error is None:
        try:
            correct = bool(check(answer, case.expected))
        except Exception as exc:
            where = f"line {case.line}" if case.line else "a case"
            raise TrialError(
                f"check {getattr(check, '__name__', check)!r} raised on {where} "
                f"({target.name}): {type(exc).__name__}: {exc}; the trial stopped"
            ) from exc
    return Outcome(
        model=target.name,
        case=case.line,
        cost=cost,
        input_tokens=sum(u.input_tokens for u in usage),
        output_tokens=sum(u.output_tokens for u in usage),
        latency_s=latency,
        correct=correct,
        error=error,
    )


def trial(
    models: Sequence[str] | str,
    cases: str | Path | Iterable[Any],
    *,
    check: str | Check = "exact",
    usd: Decimal | str | int | None = None,
    repeat: int = 1,
    concurrency: int = 4,
    within: Decimal | str | int = 2,
    max_tokens: int = 1024,
    clients: Mapping[str, Any] | None = None,
    listeners: Iterable[Callable[[CallRecord], None]] = (),
    progress: bool | None = None,
) -> TrialResult:
    """Send every case to every model (``repeat`` times) and compare them.

    ``models``: names (or one comma-separated string); each is asked through an
    instrumented client built the SDK's usual way (``clients={name: client}`` to
    give your own: Azure, a gateway). ``cases``: a JSONL path, or objects
    ``{"messages": [...] | "prompt": "...", "expected": ...}``. ``check``:
    ``exact``, ``contains``, ``json``, ``python:module:func`` or a callable
    ``(answer, expected) -> bool``. ``usd``: the whole trial's budget.
    ``max_tokens``: each call's output cap (what each call holds is priced at
    it). ``listeners``: also told of each call while the trial runs (a ledger);
    every call is recorded with ``feature="trial"`` and a ``trial`` tag.
    ``progress``: a counter on stderr (default: when stderr is a terminal).

    Everything is checked before the first call: an unknown model raises
    ``UnknownModel``, a bad case or check ``TrialError`` (naming the line).
    """
    names = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    names = [m for m in names if m]
    if repeat < 1:
        raise TrialError(f"repeat: must be >= 1, got {repeat}")
    if concurrency < 1:
        raise TrialError(f"concurrency: must be >= 1, got {concurrency}")
    if max_tokens < 1:
        raise TrialError(f"max_tokens: must be >= 1, got {max_tokens}")
    try:
        points = Decimal(str(within))
    except ArithmeticError:
        raise TrialError(f"within: expected points of accuracy, got {within!r}") from None
    if not points.is_finite() or points < 0:
        raise TrialError(f"within: expected points of accuracy >= 0, got {within!r}")
    try:
        limit = None if usd is None else check_nanos(usd_to_nanos(usd, field="usd"), field="usd")
    except ConfigurationError as error:
        raise TrialError(str(error)) from None
    judge = resolve_check(check)
    asked = load_cases(cases)
    if not asked:
        raise TrialError("cases: no cases")
    chosen = targets(names, clients)
    jobs = [(target, case) for _, case, target in itertools.product(range(repeat), asked, chosen)]
    tty = sys.stderr.isatty() if progress is None else progress
    shown = _Progress(len(jobs), sys.stderr if tty else None)
    trial_id = uuid.uuid4().hex[:12]
    _install_capture()
    extras = _extras.set(tuple(listeners))
    try:
        with spend_limit(
            None if limit is None else nanos_to_usd(limit),
            feature="trial",
            tags={"trial": trial_id},
            on_exceed="raise",
            name="trial",
        ) as run:
            outcomes, stopped = _drive(
                jobs,
                judge=judge,
                max_tokens=max_tokens,
                concurrency=concurrency,
                shown=shown,
                run=run,
            )
            spent = run.spent
    finally:
        _extras.reset(extras)
        shown.end()
        close(chosen)
    if stopped == _OWN_LIMIT and limit is not None:
        stopped = (
            f"stopped: the next call would have passed the {format_usd(limit)} limit; "
            f"{len(outcomes)} of {len(jobs)} calls made"
        )
    rows = tuple(summarize(t.name, outcomes) for t in chosen)
    return TrialResult(
        rows=rows,
        pick=pick(rows, points),
        within=points,
        usd=None if limit is None else nanos_to_usd(limit),
        spent=spent,
        planned=len(jobs),
        made=len(outcomes),
        stopped=stopped,
        outcomes=tuple(outcomes),
    )


def _drive(
    jobs: list[tuple[Target, Case]],
    *,
    judge: Check,
    max_tokens: int,
    concurrency: int,
    shown: _Progress,
    run: Any,
) -> tuple[list[Outcome], str | None]:
    """Run ``jobs`` at most ``concurrency`` at a time, in order; stop starting new ones
    at the first refusal. A check's TrialError is raised once the calls in flight end."""
    outcomes: list[Outcome] = []
    stopped: str | None = None
    failure: BaseException | None = None
    pending = iter(jobs)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bg-trial") as pool:
        running: set[Future[Outcome]] = set()

        def start() -> None:
            for target, case in itertools.islice(pending, concurrency - len(running)):
                context = contextvars.copy_context()
                running.add(pool.submit(context.run, _one, target, case, judge, max_tokens))

        start()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.discard(future)
                try:
                    outcome = future.result()
                except BudgetExceeded as exc:
                    if stopped is None:  # the trial's own --usd (its run), or another limit
                        mine = exc.scope == "run" and exc.key == "trial"
                        stopped = _OWN_LIMIT if mine else f"stopped: {exc}"
                    continue
                except TrialError as exc:
                    failure = failure or exc
                    continue
                outcomes.append(outcome)
                shown.step(run.spent)
            if stopped is None and failure is None:
                start()
    if failure is not None:
        raise failure
    return outcomes, stopped
