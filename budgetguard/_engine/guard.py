"""``budget`` and ``spend_limit``: one engine, used as decorator or (async) context manager.

Each entry pushes a fresh ``Frame`` (attribution + extra limits) on the
context's stack; every guarded LLM call inside is checked against all frames
on the stack, so an inner frame can never spend past an outer one. Entering
and leaving are written once, as flows of store operations (``_enter`` and
``_leave``); the context-manager methods and the decorator only drive them,
sync or async. What one entry needs at its exit lives in a context variable,
not on the guard, so one guard object may be entered by many threads and
tasks at once (stamina's fresh state per call).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from .._core.attribution import Frame, RunTally
from .._core.errors import ConfigurationError, UsageError
from .._core.money import UsdLike, nanos_to_usd, usd_to_nanos
from .._core.policy import Limit, OnExceed
from .._core.usage import Usage
from ..providers.fields import model_of
from ..providers.registry import usage_from_response
from ..stores.drive import Flow, Invoke, arun, run
from . import frames
from .admission import Admission
from .binder import Binder, bind
from .charges import Charge, looks_like_a_response, priced, unpriced, worst_case_of
from .config import Settings, current
from .flow import admit_after_flow, admit_flow
from .ids import new_id

__all__ = ["Guard", "GuardOptions", "Run", "budget", "spend_limit"]

P = ParamSpec("P")
R = TypeVar("R")

Attr = str | Callable[..., str | None] | None
Estimate = UsdLike | Callable[..., UsdLike] | None

_EMPTY_ID = (
    "{field}: an empty string is not an id (an empty request header?); pass None for a "
    "call with no {field}, else it would escape every {field} limit"
)


class Run:
    """What one entered frame has spent so far (``run.spent``, ``run.remaining``, ``run.calls``)."""

    __slots__ = ("_actual", "_frame", "_limit", "_pending")

    def __init__(self, frame: Frame, limit: int | None) -> None:
        self._frame = frame
        self._limit = limit
        self._actual: int | None = None
        self._pending: tuple[object, Usage | None, str | None] | None = None

    @property
    def id(self) -> str:
        return self._frame.id

    @property
    def spent(self) -> Decimal:
        return nanos_to_usd(self._frame.tally.spent)

    @property
    def calls(self) -> int:
        return self._frame.tally.calls

    @property
    def limit(self) -> Decimal | None:
        return None if self._limit is None else nanos_to_usd(self._limit)

    @property
    def remaining(self) -> Decimal | None:
        """Budget left in this run's own ``usd`` limit (None when it has none)."""
        if self._limit is None:
            return None
        return nanos_to_usd(max(0, self._limit - self._frame.tally.spent))

    def record(
        self,
        response: object | None = None,
        *,
        usage: Usage | None = None,
        model: str | None = None,
        usd: UsdLike | None = None,
    ) -> None:
        """The actual cost of an ``estimate=`` block: a provider response, a usage, or dollars."""
        if usd is not None:
            self._actual = usd_to_nanos(usd, field="usd")
            return
        self._actual = None
        self._pending = (response, usage, model)

    def __repr__(self) -> str:
        return f"Run(spent={self.spent}, remaining={self.remaining}, calls={self.calls})"


@dataclass(slots=True)
class _Entry:
    """One entry of a guard: what its exit must undo and settle."""

    guard: Guard
    settings: Settings
    token: Token[tuple[Frame, ...]]
    run: Run
    admission: Admission | None


_entries: ContextVar[tuple[_Entry, ...]] = ContextVar("budgetguard_entries", default=())


class Guard:
    """Created by ``budget(...)`` / ``spend_limit(...)``; see their docs."""

    def __init__(
        self,
        usd: UsdLike | None = None,
        *,
        tenant: Attr = None,
        user: Attr = None,
        feature: Attr = None,
        tags: Mapping[str, str] | None = None,
        limits: Iterable[Limit] = (),
        on_exceed: OnExceed | None = None,
        estimate: Estimate = None,
        model: str | None = None,
        name: str | None = None,
        tokens: int | None = None,
        requests: int | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigurationError(f"name: expected a non-empty string, got {name!r}")
        self._name = name
        self._usd = None if usd is None else usd_to_nanos(usd, field="usd")
        if self._usd is not None and self._usd < 0:
            raise ConfigurationError(f"usd: must be >= 0, got {usd!r}")
        self._limits = tuple(limits)
        for n, limit in enumerate(self._limits):
            if not isinstance(limit, Limit):
                raise ConfigurationError(f"limits[{n}]: expected a bg.Limit, got {limit!r}")
        if self._usd is not None or tokens is not None or requests is not None:
            usd_limit = None if self._usd is None else nanos_to_usd(self._usd)
            try:
                own = Limit(scope="run", usd=usd_limit, tokens=tokens, requests=requests)
            except ValueError as error:  # pydantic's, naming the field
                raise ConfigurationError(_first_error(error)) from None
            self._limits += (own,)
        if on_exceed not in (None, "raise", "downgrade", "block"):
            raise ConfigurationError(
                f"on_exceed: expected 'raise', 'downgrade' or 'block', got {on_exceed!r}"
            )
        self._attrs = {"tenant": tenant, "user": user, "feature": feature}
        for field, value in self._attrs.items():
            if value == "":
                raise ConfigurationError(_EMPTY_ID.format(field=field))
            if value is not None and not isinstance(value, str) and not callable(value):
                raise ConfigurationError(f"{field}: expected a str or a callable, got {value!r}")
        self._tags = dict(tags or {})
        self._on_exceed = on_exceed
        self._estimate = estimate
        self._fixed_estimate = _fixed_nanos(estimate)
        self._static = (
            (tenant, user, feature)
            if isinstance(tenant, str | None)
            and isinstance(user, str | None)
            and isinstance(feature, str | None)
            and not any(map(callable, (tenant, user, feature)))
            else None
        )  # no callables: the frame's attribution is known now
        self._model = model

    # -- frames ----------------------------------------------------------------
    def _frame(self, args: tuple[Any, ...], kwargs: dict[str, Any], fn: Binder | None) -> Frame:
        if self._static is not None:
            tenant, user, feature = self._static
        else:
            resolved: dict[str, str | None] = {}
            bound: dict[str, Any] | None = None
            for field, value in self._attrs.items():
                if callable(value):
                    if bound is None:
                        bound = bind(fn, args, kwargs)
                    result = value(**bound)
                    if result is not None and not isinstance(result, str):
                        result = str(result)
                    if result == "":
                        raise ConfigurationError(_EMPTY_ID.format(field=field))
                    resolved[field] = result
                else:
                    resolved[field] = value
            tenant, user, feature = resolved["tenant"], resolved["user"], resolved["feature"]
        return Frame(
            id=new_id(),
            tenant=tenant,
            user=user,
            feature=feature,
            tags=self._tags,
            limits=self._limits,
            on_exceed=self._on_exceed,
            tally=RunTally(),
            name=self._name,
        )

    def _estimate_nanos(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], fn: Binder | None
    ) -> int | None:
        if self._fixed_estimate is not None:
            return self._fixed_estimate
        if self._estimate is None:
            return None
        value = self._estimate
        if callable(value):
            value = value(**bind(fn, args, kwargs))
        nanos = usd_to_nanos(value, field="estimate")
        if nanos < 0:
            raise ConfigurationError(f"estimate: must be >= 0, got {value!r}")
        return nanos

    # -- entering and leaving, written once --------------------------------------
    def _enter(
        self, settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any], fn: Binder | None
    ) -> Flow[_Entry]:
        """Push a frame; with ``estimate=``, reserve it (the frame is popped if that fails)."""
        frame = self._frame(args, kwargs, fn)
        token = frames.push(frame)
        admission = None
        try:
            nanos = self._estimate_nanos(args, kwargs, fn)
            if nanos is not None:
                admission = yield from admit_flow(settings, model=self._model, cost=nanos)
        except BaseException:
            frames.pop(token)
            raise
        return _Entry(self, settings, token, Run(frame, self._usd), admission)

    def _leave(
        self, entry: _Entry, *, failed: bool, returned: bool = False, result: object = None
    ) -> Flow[None]:
        """Pop the frame and settle (or release) what ``estimate=`` reserved.

        A decorated function that reserved nothing but returned a provider
        response is charged now, after the fact (``returned``).
        """
        run_ = entry.run
        admission, charge = entry.admission, None
        if admission is None and returned and not run_.calls:
            after = yield from self._after_the_fact(result)  # reads the frames: before the pop
            if after is not None:
                admission, charge = after
        calls = run_.calls
        frames.pop(entry.token)
        if admission is None:
            return
        if not failed and charge is None:
            charge = self._charge(admission, run_, result, calls)
        if charge is None:  # failed, or instrumented calls inside paid for themselves
            yield from admission.release_flow()
        else:
            yield from charge.settle(admission)

    def _charge(self, admission: Admission, run_: Run, result: object, calls: int) -> Charge | None:
        """What an ``estimate=`` call cost: recorded with ``run.record``, read from its
        result, else the estimate (None: instrumented calls inside paid for themselves)."""
        if run_._actual is not None:
            return Charge(run_._actual, None, None)
        response, usage, model = run_._pending or (result, None, None)
        model = model or self._model
        if usage is not None:
            return priced(admission, "estimate=", usage, model)
        if response is not None:
            try:
                found = usage_from_response(response)
            except UsageError as error:
                return unpriced(admission, "estimate=", model, str(error))
            if found is not None:
                return priced(admission, "estimate=", found[1], found[0] or model)
        return None if calls else Charge(admission.estimate, None, None)

    def _after_the_fact(self, result: object) -> Flow[tuple[Admission, Charge] | None]:
        """No estimate reserved this call and no instrumented client inside paid for
        it, yet it returned a provider response: the money is spent, so charge it
        now, to every budget in force (after the fact, so without a limit check)."""
        if result is None:
            return None
        try:
            found = usage_from_response(result)
        except UsageError as error:
            if not looks_like_a_response(result):
                return None  # something else with a "usage" field: not ours to charge
            admission = yield from admit_after_flow(self._model or model_of(result))
            return admission, worst_case_of(admission, "@budget", str(error))
        if found is None:
            return None
        model = found[0] or self._model
        admission = yield from admit_after_flow(model)
        return admission, priced(admission, "@budget", found[1], model)

    # -- context manager ---------------------------------------------------------
    def _push_entry(self, entry: _Entry) -> Run:
        _entries.set((*_entries.get(), entry))
        return entry.run

    def _pop_entry(self) -> _Entry:
        """This guard's innermost entry in the current thread or task."""
        entries = _entries.get()
        for n in range(len(entries) - 1, -1, -1):
            if entries[n].guard is self:
                _entries.set(entries[:n] + entries[n + 1 :])
                return entries[n]
        raise RuntimeError("budgetguard: leaving a guard that was not entered in this context")

    def __enter__(self) -> Run:
        settings = current()
        return self._push_entry(run(self._enter(settings, (), {}, None), settings.store))

    async def __aenter__(self) -> Run:
        settings = current()
        entry = await arun(self._enter(settings, (), {}, None), settings.async_store)
        return self._push_entry(entry)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = self._pop_entry()
        run(self._leave(entry, failed=exc_type is not None), entry.settings.store)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = self._pop_entry()
        await arun(self._leave(entry, failed=exc_type is not None), entry.settings.async_store)

    # -- decorator -----------------------------------------------------------------
    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        binder = Binder(fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                settings = current()
                return await arun(
                    self._call(settings, fn, args, kwargs, binder), settings.async_store
                )

            return async_guarded

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            settings = current()
            return run(self._call(settings, fn, args, kwargs, binder), settings.store)

        return guarded

    def _call(
        self,
        settings: Settings,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        binder: Binder,
    ) -> Flow[Any]:
        """One call of the decorated function: enter, call (or await) it, leave."""
        entry = yield from self._enter(settings, args, kwargs, binder)
        try:
            result = yield Invoke(functools.partial(fn, *args, **kwargs))
        except BaseException:
            yield from self._leave(entry, failed=True)
            raise
        yield from self._leave(entry, failed=False, returned=True, result=result)
        return result


def _fixed_nanos(estimate: Estimate) -> int | None:
    """A constant ``estimate=`` in nano-USD, converted once; None when it is a
    callable (or invalid: the call then raises, naming the field, as before)."""
    if estimate is None or callable(estimate):
        return None
    try:
        nanos = usd_to_nanos(estimate, field="estimate")
    except (TypeError, ValueError):
        return None
    return nanos if nanos >= 0 else None


def _first_error(error: ValueError) -> str:
    """``tokens: must be between ...`` out of a pydantic ValidationError's text."""
    lines = [line.strip() for line in str(error).splitlines()]
    for line in lines:
        if line.startswith("Value error, "):
            return line.removeprefix("Value error, ").split(" [type=")[0]
    return lines[-1] if lines else str(error)


class GuardOptions(TypedDict, total=False):
    tenant: Attr
    user: Attr
    feature: Attr
    tags: Mapping[str, str] | None
    limits: Iterable[Limit]
    on_exceed: OnExceed | None
    estimate: Estimate
    model: str | None
    name: str | None
    tokens: int | None
    requests: int | None


def budget(usd: UsdLike | None = None, **options: Unpack[GuardOptions]) -> Guard:
    """Guard every call of the decorated function (sync or async).

    Attribution (``tenant``, ``user``, ``feature``, ``tags``) labels and limits
    every LLM call made inside; a value may be a callable of the function's
    arguments: ``user=lambda user_id, **_: user_id``. ``usd`` caps each
    invocation; ``limits`` add limits while inside; ``on_exceed`` overrides
    the policy's. ``estimate`` (USD, or a callable of the arguments) reserves
    a worst case for code that calls no instrumented client; the call is then
    settled from the provider response it returns, else charged the estimate.
    ``model`` names the model for model-scoped limits and for pricing that
    response; ``name`` names the frame in errors (which run refused). An empty
    string as ``tenant`` / ``user`` / ``feature`` (or returned by a callable) is
    refused with a ConfigurationError: it would otherwise escape every limit of
    its scope. Also usable as ``with budget(...)``.
    """
    return Guard(usd, **options)


def spend_limit(usd: UsdLike | None = None, **options: Unpack[GuardOptions]) -> Guard:
    """Cap what the block spends: ``with bg.spend_limit(usd=0.50) as run:`` (or ``async with``).

    Every guarded LLM call inside counts against ``usd`` (and every outer
    frame's limits); ``run.spent``, ``run.remaining`` and ``run.calls`` say
    where it stands. ``tokens=`` and ``requests=`` cap the block's tokens (input
    plus output, held at each call's worst case) and its number of LLM calls - an
    agent loop that may take at most 20 steps. Also usable as a decorator; same
    options as ``budget``.
    """
    return Guard(usd, **options)
