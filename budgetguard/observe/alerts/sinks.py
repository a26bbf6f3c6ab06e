"""Where alerts go: the log, any callable, or a webhook off the request path."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ..._core.errors import ConfigurationError
from ..background import Worker
from .model import Alert
from .slack import slack_payload

__all__ = ["AlertSink", "LogSink", "Webhook"]

log = logging.getLogger("budgetguard.alerts")


AlertSink = Callable[[Alert], None]


@dataclass(frozen=True)
class LogSink:
    """Logs each alert (default: ``budgetguard.alerts`` at WARNING)."""

    logger: str = "budgetguard.alerts"
    level: int = logging.WARNING

    def __call__(self, alert: Alert) -> None:
        logging.getLogger(self.logger).log(
            self.level, "budgetguard alert: %s", alert.message, extra={"alert": alert.to_dict()}
        )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery: following it would send the alert (and any
    ``Authorization`` header) to another host, as a GET, and count it as sent."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError(3xx): not retried, counted as failed


_OPENER = urllib.request.build_opener(_NoRedirects)


class Webhook:
    """POST each alert as JSON to ``url``, off the request path and off the alert thread.

    ``format="slack"`` sends ``{"text": message, "blocks": [...]}``: Block Kit
    for Slack (a header, the message, the numbers as fields), with ``text`` the
    fallback that Mattermost and Discord-compatible incoming webhooks show;
    ``"json"`` sends ``text`` and every field of the alert. Each POST has a
    ``timeout``; connection errors, timeouts, 429 and 5xx are retried
    ``retries`` times with jittered backoff, within ``max_total_s``. Other 4xx
    are not retried, and a redirect (3xx) is a failed delivery: it is never
    followed. Counts: ``sent``, ``failed``, ``dropped`` (queue full).
    ``Alerts`` hands threshold, exhaustion, spike, anomaly and digest alerts to
    ``deliver`` (at once, so they never wait behind per-call alerts, and retried
    until delivered); per-call alerts go through the queue.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        max_total_s: float = 30.0,
        format: Literal["slack", "json"] = "slack",
        headers: Mapping[str, str] | None = None,
        max_queue: int = 1000,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"url: expected an http(s) URL, got {url!r}")
        if timeout <= 0 or retries < 0 or max_total_s <= 0:
            raise ConfigurationError("timeout / retries / max_total_s: must be positive")
        if format not in ("slack", "json"):
            raise ConfigurationError(f"format: expected 'slack' or 'json', got {format!r}")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.max_total_s = max_total_s
        self.format = format
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.sent = 0
        self.failed = 0
        self._worker: Worker[Alert] = Worker("budgetguard-webhook", self._send_all, max_queue)

    def __call__(self, alert: Alert) -> None:
        self._worker.put(alert)

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    def payload(self, alert: Alert) -> dict[str, Any]:
        if self.format == "slack":
            return slack_payload(alert)
        return {"text": alert.message, **alert.to_dict()}

    def deliver(self, alert: Alert) -> bool:
        """POST ``alert`` now, with the same retries as queued ones: True if delivered."""
        try:
            self._send(alert)
        except Exception as exc:
            self.failed += 1
            log.error("budgetguard: webhook %s failed for %r: %r", self._where, alert.kind, exc)
            return False
        self.sent += 1
        return True

    def _send_all(self, alerts: list[Alert]) -> None:
        for n, alert in enumerate(alerts):
            if self._worker.abort.is_set():
                log.error(
                    "budgetguard: webhook %s closed with %d alerts unsent",
                    self._where,
                    len(alerts) - n,
                )
                self.failed += len(alerts) - n
                return
            try:
                self._send(alert)
            except Exception as exc:
                self.failed += 1
                log.error("budgetguard: webhook %s failed for %r: %r", self._where, alert.kind, exc)
            else:
                self.sent += 1

    @property
    def _where(self) -> str:
        return self.url.split("?", 1)[0]

    def _send(self, alert: Alert) -> None:
        body = json.dumps(self.payload(alert)).encode()
        abort = self._worker.abort
        retrying = Retrying(
            stop=(
                stop_after_attempt(self.retries + 1)
                | stop_after_delay(self.max_total_s)
                | _StopOn(abort)
            ),
            wait=wait_random_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                request = urllib.request.Request(
                    self.url, data=body, headers=self.headers, method="POST"
                )
                with _OPENER.open(request, timeout=self.timeout) as response:
                    response.read(1024)

    def _sleep(self, seconds: float) -> None:
        self._worker.abort.wait(seconds)  # closing cuts a backoff short

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until the alerts queued so far are delivered (or given up)."""
        return self._worker.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Deliver what is queued within ``timeout``, then give up the rest."""
        self._worker.close(timeout)

    def __repr__(self) -> str:
        return f"Webhook({self._where!r})"


class _StopOn(stop_base):
    """Stop retrying once ``event`` is set (the webhook is closing)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    return isinstance(exc, OSError)  # URLError, timeouts, connection refused / reset
