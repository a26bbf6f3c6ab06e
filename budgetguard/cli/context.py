"""Where a command's policy, store and ledger come from: files, apps, environment, flags."""

from __future__ import annotations

import importlib
import json
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._core.errors import ConfigurationError
from .._core.policy import Policy
from ..observe.ledger import Ledger, open_ledger
from ..stores.base import Store
from ..stores.memory import MemoryStore

__all__ = ["DEFAULT_CONFIG", "CliError", "Context", "load_context"]

_POLICY_KEYS = frozenset(Policy.model_fields)
_CONFIG_KEYS = (
    frozenset({"store", "ledger", "prefix", "policy", "prices_refresh", "prices_url"})
    | _POLICY_KEYS
)


DEFAULT_CONFIG = "budgetguard.toml"
"""Read from the current directory when no --config, $BUDGETGUARD_CONFIG or app names one."""


class CliError(Exception):
    """A bad option or configuration: printed as ``budgetguard: error: ...``, exit status 2."""


@dataclass
class Context:
    """What a command works on, and where each part came from (for error messages)."""

    policy: Policy = field(default_factory=Policy)
    store_url: str | None = None
    ledger_url: str | None = None
    prefix: str = "bg"
    store_obj: Store | None = None
    ledger_obj: Ledger | None = None
    prices_refresh: str | float | None = None
    """Live prices (``prices_refresh = "1h"``): how often to fetch; None: the snapshot."""
    prices_url: str | None = None
    """Where live prices are fetched from (a mirror); None: genai-prices' own."""
    sources: dict[str, str] = field(default_factory=dict)
    _store: Store | None = None
    _ledger: Ledger | None = None

    def store(self) -> Store:
        if self._store is None:
            if self.store_obj is not None:
                self._store = self.store_obj
            else:
                self._store = _store_from_url(
                    self.store_url or "memory://", self.prefix, self.sources.get("store", "store")
                )
        return self._store

    def ledger(self) -> Ledger:
        if self._ledger is None:
            if self.ledger_obj is not None:
                self._ledger = self.ledger_obj
            elif self.ledger_url is None:
                raise CliError(
                    "no ledger configured: pass --ledger sqlite:///budgetguard.db, set "
                    "BUDGETGUARD_LEDGER, or name `ledger` in --config"
                )
            else:
                where = self.sources.get("ledger", "ledger")
                try:
                    self._ledger = open_ledger(self.ledger_url, must_exist=True)
                except ConfigurationError as exc:
                    raise CliError(f"{where}: {exc}") from None
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None and self._ledger is not self.ledger_obj:
            self._ledger.close(timeout=5)
        close = getattr(self._store, "close", None)
        if self._store is not None and self._store is not self.store_obj and callable(close):
            close()


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_store_url(url: str, where: str) -> None:
    text = url.strip()
    if text not in ("", "memory", "memory://") and not text.startswith(_REDIS_SCHEMES):
        raise CliError(
            f"{where}: unsupported store URL {url!r}; use redis://host:6379/0 or memory://"
        )


def _store_from_url(url: str, prefix: str, where: str) -> Store:
    _check_store_url(url, where)
    text = url.strip()
    if not text.startswith(_REDIS_SCHEMES):
        return MemoryStore()
    from ..stores.redis import RedisStore

    try:
        return RedisStore.from_url(text, prefix=prefix)
    except (ConfigurationError, ValueError) as exc:
        raise CliError(f"{where}: {exc}") from None


# -- loading the configuration ---------------------------------------------------


def _read_config(path: str, where: str) -> dict[str, Any]:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise CliError(f"{where}: cannot read {path!r}: {exc.strerror or exc}") from None
    text = raw.decode("utf-8", errors="replace")
    suffix = file.suffix.lower()
    try:
        data: Any = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if suffix == ".json" else "TOML"
        raise CliError(f"{where}: {path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"{where}: {path} must hold a table/object at the top level")
    return data


def _apply_config(ctx: Context, data: Mapping[str, Any], path: str) -> None:
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise CliError(
            f"{path}: unknown key(s) {', '.join(unknown)}; expected store, ledger, prefix, "
            "prices_refresh, prices_url, policy (or the policy's own keys: "
            f"{', '.join(sorted(_POLICY_KEYS))})"
        )
    policy_data = dict(data.get("policy") or {})
    if not isinstance(data.get("policy", {}), Mapping):
        raise CliError(f"{path}: policy: expected a table/object")
    for key in _POLICY_KEYS & set(data):
        policy_data[key] = data[key]
    if policy_data:
        try:
            ctx.policy = Policy.model_validate(policy_data)
        except ValidationError as exc:
            raise CliError(f"{path}: policy: {_validation_text(exc)}") from None
        ctx.sources["policy"] = path
    if "prices_refresh" in data:
        refresh = data["prices_refresh"]
        if isinstance(refresh, bool) or not isinstance(refresh, str | int | float):
            raise CliError(f'{path}: prices_refresh: expected "1h", "30m" or seconds')
        from ..pricing.live import parse_refresh

        try:
            parse_refresh(refresh)  # refused here, whatever command reads the file
        except ConfigurationError as error:
            raise CliError(f"{path}: {error}") from None
        ctx.prices_refresh = refresh
    if "prices_url" in data:
        if not isinstance(data["prices_url"], str):
            raise CliError(f"{path}: prices_url: expected a URL string")
        ctx.prices_url = data["prices_url"]
    for name in ("store", "prefix"):
        if name in data:
            value = data[name]
            if not isinstance(value, str):
                raise CliError(f"{path}: {name}: expected a string, got {value!r}")
            setattr(ctx, "store_url" if name == "store" else name, value)
            ctx.sources[name] = f"{path}: {name}"
            if name == "store":
                ctx.store_obj = None
    if "ledger" in data:
        ctx.ledger_url = _ledger_url(data["ledger"], f"{path}: ledger")
        ctx.ledger_obj = None
        ctx.sources["ledger"] = f"{path}: ledger"


def _ledger_url(value: Any, where: str) -> str:
    """``ledger = "sqlite:///x.db"``, or a table ``{url = ..., table = ..., schema = ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("url"), str):
        extra = {k: v for k, v in value.items() if k != "url"}
        bad = sorted(set(extra) - {"table", "schema"})
        if bad:
            raise CliError(f"{where}: unknown key(s) {', '.join(bad)}; expected url, table, schema")
        url = str(value["url"])
        if extra:
            url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in extra.items())
        return url
    raise CliError(f"{where}: expected a URL string or a table with `url`, got {value!r}")


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        msg = str(error["msg"]).removeprefix("Value error, ")
        if msg.split(":", 1)[0] == loc.rsplit(".", 1)[-1]:
            msg = msg.split(":", 1)[1].strip()  # "usd: must be >= 0" under limits.0.usd
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _apply_app(ctx: Context, spec: str, where: str) -> None:
    """Import ``module:attr``, call it if callable, then read what ``bg.configure`` set."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CliError(f"{where}: expected module:attr (e.g. myapp.budgets:setup), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"{where}: cannot import {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{where}: {module_name!r} has no attribute {attr!r}") from None
    from .._engine import config as _config

    if callable(target):
        try:
            target = target()
        except Exception as exc:
            raise CliError(f"{where}: {spec} raised {type(exc).__name__}: {exc}") from None
    settings = _config.current()
    ctx.policy = settings.policy
    ctx.sources["policy"] = where
    if settings.store is not None:
        ctx.store_obj = settings.store
        ctx.store_url = settings.store_url
        ctx.prefix = getattr(settings.store, "prefix", ctx.prefix)
        ctx.sources["store"] = where
    ledgers = [t for t in (target, *settings.listeners) if isinstance(t, Ledger)]
    if ledgers:
        ctx.ledger_obj = ledgers[0]
        ctx.sources["ledger"] = where


def load_context(
    *,
    config: str | None = None,
    app: str | None = None,
    store: str | None = None,
    ledger: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Context:
    """The policy, store and ledger a command works on.

    Lowest to highest priority: ``--app`` (or ``$BUDGETGUARD_APP``), ``--config``
    (or ``$BUDGETGUARD_CONFIG``; else ``./budgetguard.toml`` when there is one
    and no app is named), ``$BUDGETGUARD_STORE`` / ``$BUDGETGUARD_LEDGER``,
    then ``--store`` / ``--ledger``.
    """
    env = os.environ if environ is None else environ
    ctx = Context()
    app_spec, app_where = (app, "--app") if app else (env.get("BUDGETGUARD_APP"), "BUDGETGUARD_APP")
    if app_spec:
        _apply_app(ctx, app_spec, app_where)
    path, where = (config, "--config") if config else (env.get("BUDGETGUARD_CONFIG"), "")
    if not path and not app_spec and os.path.isfile(DEFAULT_CONFIG):
        path, where = DEFAULT_CONFIG, DEFAULT_CONFIG
    if path:
        _apply_config(ctx, _read_config(path, where or "BUDGETGUARD_CONFIG"), path)
    for name, flag, var in (
        ("store", store, "BUDGETGUARD_STORE"),
        ("ledger", ledger, "BUDGETGUARD_LEDGER"),
    ):
        value, source = (flag, f"--{name}") if flag else (env.get(var), var)
        if value:
            setattr(ctx, f"{name}_url", value)
            setattr(ctx, f"{name}_obj", None)
            ctx.sources[name] = source
    if ctx.store_obj is None and ctx.store_url is not None:
        _check_store_url(ctx.store_url, ctx.sources.get("store", "store"))
    return ctx
