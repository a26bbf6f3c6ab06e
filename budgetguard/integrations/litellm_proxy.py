"""``BudgetHook``: budgets in front of a LiteLLM proxy, as one of its callbacks.

Put it in a module next to the proxy's ``config.yaml``, configured as usual::

    # budget_hook.py
    import budgetguard as bg
    from budgetguard.integrations.litellm_proxy import BudgetHook

    bg.configure(store="redis://localhost:6379/0", policy=bg.Policy(limits=[...]))
    hook = BudgetHook(models={"claude": "anthropic/claude-sonnet-4-5"})

    # config.yaml
    litellm_settings:
      callbacks: budget_hook.hook

Each chat completion (``/chat/completions``) is estimated and reserved in
``async_pre_call_hook``, before the proxy routes it, under a frame that
attributes it to the proxy's team (``tenant``), user (``user``) and, in tags,
its key, key alias, end user, organisation and request tags. A call that does
not fit is refused there: the hook raises the proxy's ``ProxyException`` with
status 429, the budget's message and ``retry-after`` when waiting helps (with
``x-should-retry: false`` when it does not, so the OpenAI and Anthropic SDKs
do not retry it). A model nobody can price is refused with 400, a budget store
that fails closed with 503. The policy's choices reach the request: an output
cap is sent as ``max_tokens``, and a downgrade (keyed by model names, as
everywhere) sends the model group of ``models`` that runs the cheaper model,
else that model under the asked group's provider prefix.

The call is settled once, from the provider's usage: a response in
``async_post_call_success_hook``, a stream as it ends in
``async_post_call_streaming_iterator_hook`` (which meters what the client is
sent; the usage chunk it asks for is hidden from a client that did not), a
failure released in ``async_post_call_failure_hook``. A call no hook reported
within ``max_call_s`` is charged its reservation, logged. A hook that fails
never fails the client's call: it is logged.

The model the proxy is asked for is a model group; ``models`` maps groups to
the LiteLLM model they run (``{"claude": "anthropic/claude-sonnet-4-5"}``),
else the group name is read as one (``"gpt-4o"``, ``"anthropic/claude-..."``).
Calls are counted, priced and recorded as that model; the group is in the
``litellm.model_group`` tag.
Only chat completions are guarded: other routes (embeddings, ``/v1/messages``,
Responses, images, audio) pass, with one warning per route.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import openai
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException

from .._core.errors import (
    BudgetError,
    BudgetExceeded,
    ConfigurationError,
    StoreUnavailable,
    describe_error,
)
from .._engine.admission import Admission, warn_once
from .._engine.charges import unpriced
from .._engine.config import Settings, current
from .._engine.guard import Guard, spend_limit
from ..providers.meter import StreamMeter
from ..providers.prepared import PreparedCall
from ..providers.routes import Route
from ..providers.streams import AsyncGuardedStream
from ..stores.drive import Flow, arun
from ._litellm_wire import LiteLLMCall, LiteLLMStreamTracker

__all__ = ["IDENTITIES", "BudgetHook", "Source"]

log = logging.getLogger("budgetguard")

Source = str | Callable[[Any, Mapping[str, Any]], str | None] | None
"""Where an attribution comes from: a name in ``IDENTITIES``, a callable of the proxy's
``UserAPIKeyAuth`` and the request body, or None."""


def _field(name: str) -> Callable[[Any, Mapping[str, Any]], object]:
    return lambda auth, data: getattr(auth, name, None)


def _key_hash(auth: Any, data: Mapping[str, Any]) -> str | None:
    """The key as the proxy stores it: a SHA-256 hash, never the raw credential (``token``
    is the raw bearer under OAuth2, custom auth or no master key: hashed here)."""
    token = getattr(auth, "token", None)
    if not isinstance(token, str) or not token:
        return None
    if _HASHED.fullmatch(token):
        return token.lower()
    return hashlib.sha256(token.encode()).hexdigest()


_HASHED = re.compile(r"[0-9a-fA-F]{64}")

IDENTITIES: Mapping[str, Callable[[Any, Mapping[str, Any]], object]] = {
    "key": _key_hash,  # the key's hash: what the proxy stores it as
    "key_alias": _field("key_alias"),
    "user": _field("user_id"),
    "team": _field("team_id"),
    "end_user": lambda auth, data: getattr(auth, "end_user_id", None) or data.get("user"),
    "org": _field("org_id"),
}
"""The proxy identities an attribution may name, read from ``UserAPIKeyAuth``."""

_CALL_KEY = "budgetguard_call_id"
"""Where ``async_pre_call_hook`` keeps its id of the call, in the request's metadata."""
_UPSTREAM = (openai.APIError, BudgetError, ProxyException)
_GUARDED = frozenset({"completion", "acompletion"})
_ROUTE = Route()


@dataclass(frozen=True, slots=True)
class _Pending:
    """An admitted call waiting for the proxy to report how it went."""

    call: PreparedCall
    adapter: LiteLLMCall
    admission: Admission
    since: float


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _request_tags(data: Mapping[str, Any]) -> dict[str, str]:
    """The request's tags (``tags``, or in its metadata): ``"k:v"`` as ``k``, others as
    themselves, set to ``"true"``."""
    found: dict[str, str] = {}
    for holder in (data, data.get("metadata"), data.get("litellm_metadata")):
        tags = holder.get("tags") if isinstance(holder, Mapping) else None
        if not isinstance(tags, list | tuple):
            continue
        for tag in tags:
            if isinstance(tag, str) and tag:
                key, _, value = tag.partition(":")
                found[key] = value or "true"
    return found


def _refusal(error: BudgetError) -> ProxyException:
    """The proxy's own error type: it answers with ``code`` as the HTTP status, the
    message and the headers as given."""
    headers: dict[str, str] = {}
    if isinstance(error, BudgetExceeded):
        status, kind = 429, "budget_exceeded"
        seconds = error.retry_after_s
        if seconds is not None:
            headers["retry-after"] = str(max(1, math.ceil(seconds)))
        if seconds is None or seconds > 60:
            headers["x-should-retry"] = "false"  # the OpenAI and Anthropic SDKs obey it
    elif isinstance(error, StoreUnavailable):
        status, kind = 503, "budget_store_unavailable"
    else:
        status, kind = 400, "invalid_request_error"
    return ProxyException(message=str(error), type=kind, param=None, code=status, headers=headers)


class BudgetHook(CustomLogger):
    """A LiteLLM proxy callback: refuses what does not fit, settles what was served.

    ``tenant``, ``user``, ``feature``: what each budgetguard scope is keyed by - a name in
    ``IDENTITIES`` (``"team"``, ``"user"``, ``"key"``, ``"key_alias"``, ``"end_user"``,
    ``"org"``), a callable ``(user_api_key_dict, data) -> str | None``, or None.
    Per-key budgets: ``BudgetHook(user="key")``. ``models``: model group -> the LiteLLM
    model it runs. ``max_call_s``: after this long without a success or failure report a
    call is charged its reservation. See the module docstring.
    """

    def __init__(
        self,
        *,
        tenant: Source = "team",
        user: Source = "user",
        feature: Source = None,
        models: Mapping[str, str] | None = None,
        max_call_s: float = 3600.0,
    ) -> None:
        super().__init__()
        self._sources: dict[str, Source] = {"tenant": tenant, "user": user, "feature": feature}
        for scope, source in self._sources.items():
            if source is not None and not callable(source) and source not in IDENTITIES:
                known = ", ".join(sorted(IDENTITIES))
                raise ConfigurationError(
                    f"{scope}: expected one of {known}, a callable or None; got {source!r}"
                )
        self._models = dict(models or {})
        self._groups: dict[str, str] = {}
        for group, model in reversed(self._models.items()):
            self._groups[LiteLLMCall.of({"model": model}, f"models[{group!r}]").model_name] = group
        if not max_call_s > 0:
            raise ConfigurationError(f"max_call_s: must be > 0, got {max_call_s!r}")
        self._max_call_s = max_call_s
        self._pending: dict[str, _Pending] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The proxy runs a hook only if the callback's own class defines it: a subclass
        # (to change the attribution, say) must not silently stop enforcing budgets.
        super().__init_subclass__(**kwargs)
        for name in _HOOKS:
            if name not in vars(cls):
                setattr(cls, name, vars(BudgetHook)[name])

    # -- who and what ------------------------------------------------------------------
    def _frame(self, auth: Any, data: Mapping[str, Any]) -> Guard:
        """A frame attributing the call to the proxy's identities (admitted inside it)."""
        chosen: dict[str, str | None] = {}
        for scope, source in self._sources.items():
            read = IDENTITIES[source] if isinstance(source, str) else source
            chosen[scope] = _text(read(auth, data)) if read is not None else None
        tags = {
            f"litellm.{name}": value
            for name, read in IDENTITIES.items()
            if (value := _text(read(auth, data))) is not None
        }
        group = data.get("model")
        if isinstance(group, str) and group:
            tags["litellm.model_group"] = group
        return spend_limit(
            tenant=chosen["tenant"],
            user=chosen["user"],
            feature=chosen["feature"],
            tags={**_request_tags(data), **tags},  # identities last: a client cannot forge them
        )

    def _prepare(self, data: dict[str, Any]) -> tuple[PreparedCall, LiteLLMCall]:
        """The request as the group's model: counted and priced as that model."""
        group = data.get("model")
        model = self._models.get(group, group) if isinstance(group, str) else group
        adapter = LiteLLMCall.of({**data, "model": model}, "litellm proxy")
        call = PreparedCall.prepare(adapter, data, _ROUTE, stream=data.get("stream") is True)
        return call, adapter

    def _group_for(self, model: str, adapter: LiteLLMCall) -> str:
        """The model group to send a downgraded call to: the first of ``models`` that runs
        ``model``, else ``model`` under the asked group's provider prefix."""
        return self._groups.get(model) or adapter.sent_model(model)

    def _take(self, data: Mapping[str, Any] | None) -> _Pending | None:
        """The call ``data`` was admitted as: by the id ``async_pre_call_hook`` put in its
        metadata (never ``litellm_call_id``, which a client may set and reuse)."""
        if not isinstance(data, Mapping):
            return None
        metadata = data.get("metadata")
        call_id = metadata.get(_CALL_KEY) if isinstance(metadata, Mapping) else None
        return self._pending.pop(call_id, None) if isinstance(call_id, str) else None

    def _hold(self, data: dict[str, Any], pending: _Pending) -> None:
        """Remember ``pending`` under an id of our own, put in the request's metadata (the
        dict the proxy hands every later hook)."""
        metadata = data.get("metadata")
        if not isinstance(metadata, dict):
            metadata = data["metadata"] = dict(metadata) if isinstance(metadata, Mapping) else {}
        call_id = str(uuid.uuid4())
        while call_id in self._pending:
            call_id = str(uuid.uuid4())
        metadata[_CALL_KEY] = call_id
        self._pending[call_id] = pending

    def _overdue(self) -> list[_Pending]:
        """Calls admitted more than ``max_call_s`` ago that no hook reported: oldest first,
        as admitted, so the scan stops at the first one still in time."""
        deadline = time.monotonic() - self._max_call_s
        stale: list[str] = []
        for key, pending in self._pending.items():
            if pending.since >= deadline:
                break
            stale.append(key)
        return [taken for key in stale if (taken := self._pending.pop(key, None)) is not None]

    # -- the proxy's hooks -----------------------------------------------------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        if call_type not in _GUARDED:
            warn_once(
                ("litellm proxy unguarded", call_type),
                "budgetguard: LiteLLM proxy %s calls are not guarded: they are not reserved "
                "or charged to any budget (only chat completions are)",
                call_type,
            )
            return None
        for stale in self._overdue():
            await _run(_charge_overdue(stale), stale.admission.settings)
        settings = current()
        try:
            call, adapter = self._prepare(data)
            async with self._frame(user_api_key_dict, data):
                admission = await arun(call.admit(settings), settings.async_store)
        except BudgetError as error:
            raise _refusal(error) from error
        try:
            call.admitted(admission, data)
            if admission.model is not None and admission.model != call.request.model:
                data["model"] = self._group_for(admission.model, adapter)
            self._hold(data, _Pending(call, adapter, admission, time.monotonic()))
        except BaseException as error:
            await _run(admission.release_flow(describe_error(error)), admission.settings)
            raise
        return data

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        pending = self._take(data)
        if pending is not None:
            await _run(_settle(pending, response), pending.admission.settings)
        return None

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> Any:
        pending = self._take(request_data)
        if pending is None:
            return None
        served, response = _served(request_data, original_exception)
        if not served:
            flow = pending.admission.release_flow(describe_error(original_exception))
        else:
            warn_once(
                ("litellm proxy failed after serving", type(original_exception).__name__),
                "budgetguard: a LiteLLM proxy call failed after the provider answered it "
                "(%s: a post-call guardrail, or the client left): charged, not released",
                describe_error(original_exception).splitlines()[0],
            )
            flow = _served_flow(pending, response)
        await _run(flow, pending.admission.settings)
        return None

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        pending = self._take(request_data)
        if pending is None:
            async for item in response:
                yield item
            return
        meter = StreamMeter(pending.call, pending.admission)
        if isinstance(meter.tracker, LiteLLMStreamTracker):
            meter.tracker.stream = response
        try:
            async for item in AsyncGuardedStream(response, meter):
                yield item
        finally:  # the client left mid-stream: what was consumed
            await _run(meter.finish_flow(), pending.admission.settings)


_HOOKS = (
    "async_pre_call_hook",
    "async_post_call_success_hook",
    "async_post_call_failure_hook",
    "async_post_call_streaming_iterator_hook",
)


def _settle(pending: _Pending, response: object) -> Flow[Any]:
    """Settle from the response's usage (read inside the flow: a failure is ``_run``'s)."""
    return (
        yield from pending.adapter.charge(pending.admission, response).settle(pending.admission)
    )


def _served(data: Mapping[str, Any], error: BaseException) -> tuple[bool, object]:
    """Whether the provider served a call the proxy reports as failed, and its response
    when known. Served: the logging object holds a success (the proxy defers it past its
    post-call guardrails). Not served: the provider's own error (LiteLLM's exceptions are
    the OpenAI SDK's), a budget refusal, or a logging object that saw no success."""
    logging_obj = data.get("litellm_logging_obj") if isinstance(data, Mapping) else None
    deferred = getattr(logging_obj, "deferred_success_result", None)
    if isinstance(deferred, tuple) and deferred:
        return True, deferred[0]
    if getattr(logging_obj, "_async_success_scheduled", None) is True:
        return True, None
    if isinstance(error, _UPSTREAM):
        return False, None
    if isinstance(getattr(logging_obj, "_async_success_scheduled", None), bool):
        return False, None  # the LLM call did not succeed (an earlier hook refused it)
    return True, None  # cannot tell: charged its reservation, never $0


def _served_flow(pending: _Pending, response: object) -> Flow[Any]:
    if response is not None and pending.adapter.recognizes(response):
        return _settle(pending, response)
    why = "the proxy reported a failure after the provider answered, without its usage"
    return unpriced(pending.admission, "litellm proxy", None, why).settle(pending.admission)


def _charge_overdue(pending: _Pending) -> Flow[Any]:
    why = "the proxy reported neither its success nor its failure within max_call_s"
    charge = unpriced(pending.admission, "litellm proxy", None, why)
    return charge.settle(pending.admission)


async def _run(flow: Flow[Any], settings: Settings) -> None:
    """Settle or release without ever failing the client's call: a failure is logged."""
    try:
        await arun(flow, settings.async_store)
    except Exception:
        log.exception("budgetguard: settling a LiteLLM proxy call failed; its lease expires")
