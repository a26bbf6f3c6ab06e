"""``budget`` and ``spend_limit``: one engine, used as decorator or (async) context manager.

Each entry pushes a fresh ``Frame`` (attribution + extra limits) on the
context's stack; every guarded LLM call inside is checked against all frames
on the stack, so an inner frame can never spend past an outer one. The
decorator is a thin shell over the context manager, choosing sync or async
once, at decoration time.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack, overload

from . import _engine, _frames
from ._errors import ConfigurationError, UsageError
from ._frames import Frame, RunTally
from ._money import UsdLike, nanos_to_usd, usd_to_nanos
from ._policy import Limit, OnExceed
from ._usage import Usage

__all__ = ["Guard", "GuardOptions", "Run", "budget", "spend_limit"]

P = ParamSpec("P")
R = TypeVar("R")

Attr = str | Callable[..., str | None] | None
Estimate = UsdLike | Callable[..., UsdLike] | None


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
    ) -> None:
        self._usd = None if usd is None else usd_to_nanos(usd, field="usd")
        if self._usd is not None and self._usd < 0:
            raise ConfigurationError(f"usd: must be >= 0, got {usd!r}")
        self._limits = tuple(limits)
        for n, limit in enumerate(self._limits):
            if not isinstance(limit, Limit):
                raise ConfigurationError(f"limits[{n}]: expected a bg.Limit, got {limit!r}")
        if self._usd is not None:
            self._limits += (Limit(scope="run", usd=nanos_to_usd(self._usd)),)
        if on_exceed not in (None, "raise", "downgrade", "block"):
            raise ConfigurationError(
                f"on_exceed: expected 'raise', 'downgrade' or 'block', got {on_exceed!r}"
            )
        self._attrs = {"tenant": tenant, "user": user, "feature": feature}
        for name, value in self._attrs.items():
            if value is not None and not isinstance(value, str) and not callable(value):
                raise ConfigurationError(f"{name}: expected a str or a callable, got {value!r}")
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
        self._entered: list[tuple[object, Run, _engine.Admission | None]] = []

    # -- frames ----------------------------------------------------------------
    def _frame(self, args: tuple[Any, ...], kwargs: dict[str, Any], fn: _Binder | None) -> Frame:
        if self._static is not None:
            tenant, user, feature = self._static
            return Frame(
                id=_engine.new_id(),
                tenant=tenant,
                user=user,
                feature=feature,
                tags=self._tags,
                limits=self._limits,
                on_exceed=self._on_exceed,
                tally=RunTally(),
            )
        resolved: dict[str, str | None] = {}
        bound: dict[str, Any] | None = None
        for name, value in self._attrs.items():
            if callable(value):
                if bound is None:
                    bound = _bind(fn, args, kwargs)
                result = value(**bound)
                if result is not None and not isinstance(result, str):
                    result = str(result)
                resolved[name] = result
            else:
                resolved[name] = value
        return Frame(
            id=_engine.new_id(),
            tenant=resolved["tenant"],
            user=resolved["user"],
            feature=resolved["feature"],
            tags=self._tags,
            limits=self._limits,
            on_exceed=self._on_exceed,
            tally=RunTally(),
        )

    def _estimate_nanos(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], fn: _Binder | None
    ) -> int | None:
        if self._fixed_estimate is not None:
            return self._fixed_estimate
        if self._estimate is None:
            return None
        value = self._estimate
        if callable(value):
            value = value(**_bind(fn, args, kwargs))
        nanos = usd_to_nanos(value, field="estimate")
        if nanos < 0:
            raise ConfigurationError(f"estimate: must be >= 0, got {value!r}")
        return nanos

    def _open(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], fn: _Binder | None
    ) -> tuple[object, Run]:
        frame = self._frame(args, kwargs, fn)
        return _frames.push(frame), Run(frame, self._usd)

    # -- settling the estimate= path -----------------------------------------
    def _actual(self, admission: _engine.Admission, run: Run, result: object, calls: int) -> int:
        if run._actual is not None:
            return run._actual
        pending = run._pending
        if pending is not None:
            response, usage, model = pending
            if usage is not None:
                return admission.price(usage, model or self._model)
            result = response
        if result is not None:
            from ._extract import usage_from_response

            found = usage_from_response(result)
            if found is not None:
                model, usage = found
                return admission.price(usage, model or self._model)
        if calls:
            return -1  # instrumented calls inside paid for themselves
        return admission.estimate

    def _admit_after(self, result: object, run: Run) -> _engine.Admission | None:
        """No estimate reserved this call and no instrumented client inside paid for
        it, yet it returned a provider response: the money is spent, so charge it
        now, to every budget in force (after the fact, so without a limit check)."""
        if result is None:
            return None
        from ._extract import usage_from_response

        try:
            found = usage_from_response(result)
        except UsageError:
            return None  # something else with a "usage" field: not ours to break
        if found is None:
            return None
        model, usage = found
        run._pending = (result, usage, model)  # settled from this, not parsed again
        return _engine.admit_after(model or self._model)

    # -- context manager -------------------------------------------------------
    def __enter__(self) -> Run:
        token, run = self._open((), {}, None)
        admission = None
        try:
            nanos = self._estimate_nanos((), {}, None)
            if nanos is not None:
                admission = _engine.admit_cost(nanos, model=self._model)
        except BaseException:
            _frames.pop(token)
            raise
        self._entered.append((token, run, admission))
        return run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, run, admission = self._entered.pop()
        calls = run.calls
        _frames.pop(token)
        if admission is not None:
            self._close(admission, run, None, calls, failed=exc_type is not None)

    def _close(
        self, admission: _engine.Admission, run: Run, result: object, calls: int, *, failed: bool
    ) -> None:
        actual = -1 if failed else self._actual(admission, run, result, calls)
        if actual < 0:
            admission.release()
        else:
            admission.settle_nanos(actual)

    async def __aenter__(self) -> Run:
        token, run = self._open((), {}, None)
        admission = None
        try:
            nanos = self._estimate_nanos((), {}, None)
            if nanos is not None:
                admission = await _engine.aadmit_cost(nanos, model=self._model)
        except BaseException:
            _frames.pop(token)
            raise
        self._entered.append((token, run, admission))
        return run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, run, admission = self._entered.pop()
        calls = run.calls
        _frames.pop(token)
        if admission is not None:
            await self._aclose(admission, run, None, calls, failed=exc_type is not None)

    async def _aclose(
        self, admission: _engine.Admission, run: Run, result: object, calls: int, *, failed: bool
    ) -> None:
        actual = -1 if failed else self._actual(admission, run, result, calls)
        if actual < 0:
            await admission.arelease()
        else:
            await admission.asettle_nanos(actual)

    # -- decorator -------------------------------------------------------------
    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        binder = _Binder(fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                token, run = self._open(args, kwargs, binder)
                try:
                    nanos = self._estimate_nanos(args, kwargs, binder)
                    admission = (
                        None
                        if nanos is None
                        else await _engine.aadmit_cost(nanos, model=self._model)
                    )
                    try:
                        result = await fn(*args, **kwargs)
                    except BaseException:
                        if admission is not None:
                            await admission.arelease()
                        raise
                    if admission is None and not run.calls:
                        admission = self._admit_after(result, run)
                finally:
                    calls = run.calls
                    _frames.pop(token)
                if admission is not None:
                    await self._aclose(admission, run, result, calls, failed=False)
                return result

            return async_guarded

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            token, run = self._open(args, kwargs, binder)
            try:
                nanos = self._estimate_nanos(args, kwargs, binder)
                admission = None if nanos is None else _engine.admit_cost(nanos, model=self._model)
                try:
                    result = fn(*args, **kwargs)
                except BaseException:
                    if admission is not None:
                        admission.release()
                    raise
                if admission is None and not run.calls:
                    admission = self._admit_after(result, run)
            finally:
                calls = run.calls
                _frames.pop(token)
            if admission is not None:
                self._close(admission, run, result, calls, failed=False)
            return result

        return guarded


class _Binder:
    """Binds a decorated function's arguments by name, for attribution and
    ``estimate=`` callables. ``inspect.signature`` costs more than the rest of
    a guarded call, so it is computed once; plain parameters (no ``*args``,
    ``**kwargs``, positional- or keyword-only) are then bound without it,
    anything else (or a bad call, for its error) by ``Signature.bind``."""

    __slots__ = ("_fn", "_plain", "_signature")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._signature: inspect.Signature | None = None
        self._plain: tuple[tuple[str, Any], ...] | None = None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        signature = self._signature
        if signature is None:
            signature = self._signature = inspect.signature(self._fn)
            params = signature.parameters.values()
            if all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params):
                self._plain = tuple((p.name, p.default) for p in params)
        plain = self._plain
        if plain is not None and len(args) <= len(plain):
            bound = _bind_plain(plain, args, kwargs)
            if bound is not None:
                return bound
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        return dict(arguments.arguments)


def _bind_plain(
    plain: tuple[tuple[str, Any], ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """What ``Signature.bind`` + ``apply_defaults`` give, in parameter order; None
    when the call does not fit (``Signature.bind`` then raises its own error)."""
    bound: dict[str, Any] = {}
    given = len(args)
    named = 0
    for i, (name, default) in enumerate(plain):
        if i < given:
            if name in kwargs:
                return None  # given twice
            bound[name] = args[i]
        elif name in kwargs:
            bound[name] = kwargs[name]
            named += 1
        elif default is not inspect.Parameter.empty:
            bound[name] = default
        else:
            return None  # missing
    return bound if named == len(kwargs) else None  # else an unknown keyword


def _bind(fn: _Binder | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if fn is None:
        return {}
    return fn.bind(args, kwargs)


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


class GuardOptions(TypedDict, total=False):
    tenant: Attr
    user: Attr
    feature: Attr
    tags: Mapping[str, str] | None
    limits: Iterable[Limit]
    on_exceed: OnExceed | None
    estimate: Estimate
    model: str | None


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
    response. Also usable as ``with budget(...)``.
    """
    return Guard(usd, **options)


def spend_limit(usd: UsdLike | None = None, **options: Unpack[GuardOptions]) -> Guard:
    """Cap what the block spends: ``with bg.spend_limit(usd=0.50) as run:`` (or ``async with``).

    Every guarded LLM call inside counts against ``usd`` (and every outer
    frame's limits); ``run.spent``, ``run.remaining`` and ``run.calls`` say
    where it stands. Also usable as a decorator; same options as ``budget``.
    """
    return Guard(usd, **options)
