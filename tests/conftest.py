"""Shared fixtures: real Redis (started here if none answers), tiktoken data offline."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from budgetguard import CallRecord, Limit, Policy, configure
from budgetguard.testing import FakeProvider

_SHARED_TIKTOKEN = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if _SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED_TIKTOKEN))

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on loopback; the caller terminates it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _answers("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when something answers there, else a redis-server we start ourselves."""
    parsed = urlparse(REDIS_URL)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if _answers(host, port):
        yield REDIS_URL
        return
    own_port = free_port()
    proc = start_redis_server(own_port, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{own_port}{parsed.path or '/15'}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    """A redis-py client on the test DB, flushed before and after each test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(autouse=True)
def _fresh_budgetguard() -> Iterator[None]:
    """Every test starts and ends on the default configuration (a fresh MemoryStore)."""
    import budgetguard

    reset = getattr(budgetguard, "reset", None)
    if reset is not None:
        reset()
    yield
    if reset is not None:
        reset()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    """A local fake provider (OpenAI, Anthropic, Gemini wire formats), one per test module."""
    with FakeProvider() as server:
        yield server


@pytest.fixture
def records(fake: FakeProvider) -> list[CallRecord]:
    """Every call's record, under a $100 / day tenant limit; a module may define its own."""
    fake.clear()
    seen: list[CallRecord] = []
    configure(
        policy=Policy(limits=[Limit(scope="tenant", usd=100, window="day")]),
        listeners=[seen.append],
    )
    return seen
