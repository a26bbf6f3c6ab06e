"""RedisStore / AsyncRedisStore on a real 3-master Redis Cluster started on loopback.

Proves the cluster claims of docs/redis.md: one tag is one slot, so a call's
counters of one tag reserve atomically in one script; tags on different
nodes reserve slot by slot and roll back on denial; the sweep's undeclared
keys (same slot) are accepted by a cluster node.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from conftest import free_port, start_redis_server

from budgetguard.stores import AsyncRedisStore, Counter, Denial, RedisStore, Reservation


def _cluster_ok(port: int) -> bool:
    try:
        info = redis.Redis(port=port, socket_timeout=1).cluster("info")
    except redis.RedisError:
        return False
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    return "cluster_state:ok" in str(info)


def _cluster_port(taken: list[int]) -> int:
    """A free port whose cluster bus port (+10000) is a valid, free port too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535 or port in taken:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    cli = shutil.which("redis-cli")
    if cli is None or shutil.which("redis-server") is None:
        pytest.skip("redis-server / redis-cli not installed: cannot start a cluster")
    workdir = tmp_path_factory.mktemp("cluster")
    ports: list[int] = []
    for _ in range(3):
        ports.append(_cluster_port(ports))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = Path(workdir, str(port))
            node_dir.mkdir()
            procs.append(
                start_redis_server(
                    port,
                    node_dir,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(node_dir / f"nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "2000",
                )
            )
        create = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if create.returncode != 0:
            pytest.skip(f"redis-cli --cluster create failed: {create.stderr.decode()[:200]}")
        deadline = time.monotonic() + 15
        while not all(_cluster_ok(p) for p in ports):
            if time.monotonic() > deadline:
                pytest.skip("cluster did not reach cluster_state:ok within 15s")
            time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def cluster_client(cluster_ports: list[int]) -> Iterator[redis.cluster.RedisCluster]:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def store(cluster_client: redis.cluster.RedisCluster) -> RedisStore:
    return RedisStore(cluster_client, prefix=f"c{uuid.uuid4().hex[:6]}")


def two_tags_on_two_nodes(client: redis.cluster.RedisCluster) -> tuple[str, str]:
    """Two hash tags whose slots live on different masters."""
    first = "tenant-0"
    owner = client.get_node_from_key(f"x:{{{first}}}")  # type: ignore[no-untyped-call]
    for n in range(1, 200):
        tag = f"tenant-{n}"
        if client.get_node_from_key(f"x:{{{tag}}}") != owner:  # type: ignore[no-untyped-call]
            return first, tag
    raise AssertionError("no two tags on different nodes")


def counter(key: str, limit: int, tag: str, window: str = "day") -> Counter:
    return Counter(key=key, limit=limit, window=window, scope="tenant", tag=tag)  # type: ignore[arg-type]


def rid() -> str:
    return uuid.uuid4().hex


def test_one_tag_is_one_slot_and_reserves_atomically(store: RedisStore) -> None:
    client = store.client
    assert isinstance(client, redis.cluster.RedisCluster)
    roomy, tight = counter("roomy", 1_000, "acme"), counter("tight", 100, "acme", "month")
    reservation = store.reserve(rid(), (roomy, tight), 100, 60)
    assert isinstance(reservation, Reservation)
    keys = [store.bucket_key(c, start) for c, start in reservation.buckets]
    keys += [store.lease_key("acme", reservation.id), store.index_key("acme")]
    assert len({client.keyslot(key) for key in keys}) == 1  # type: ignore[no-untyped-call]
    denial = store.reserve(rid(), (roomy, tight), 1, 60)
    assert isinstance(denial, Denial) and denial.counter == tight
    assert store.status(roomy).held == 100  # all-or-nothing: nothing more held on roomy
    assert store.settle(reservation, 30) and not store.settle(reservation, 30)
    assert [store.status(c).spent for c in (roomy, tight)] == [30, 30]


def test_tags_on_different_nodes_roll_back_on_denial(store: RedisStore) -> None:
    tag1, tag2 = two_tags_on_two_nodes(store.client)  # type: ignore[arg-type]
    first, second = counter("first", 1_000, tag1), counter("second", 100, tag2)
    reservation = store.reserve(rid(), (first, second), 80, 60)
    assert isinstance(reservation, Reservation)
    assert [store.status(c).held for c in (first, second)] == [80, 80]
    denial = store.reserve(rid(), (first, second), 50, 60)
    assert isinstance(denial, Denial) and denial.counter == second
    assert store.status(first).held == 80  # the first slot's hold of the denied call is gone
    assert store.settle(reservation, 60)
    assert [(store.status(c).spent, store.status(c).held) for c in (first, second)] == [
        (60, 0),
        (60, 0),
    ]


def test_sweep_of_undeclared_same_slot_keys_works_on_a_cluster_node(store: RedisStore) -> None:
    """The sweep touches lease records and buckets not in KEYS; same slot, so accepted."""
    other, mine = counter("other", 100, "acme"), counter("mine", 100, "acme")
    store.reserve(rid(), (other,), 100, 0.1)
    late = store.reserve(rid(), (mine,), 40, 0.1)
    assert isinstance(late, Reservation)
    time.sleep(0.2)
    fresh = store.reserve(rid(), (mine,), 10, 60)  # sweeps both expired leases
    assert isinstance(fresh, Reservation)
    assert store.status(other).held == 0  # freed by a script that never named its key
    assert store.settle(late, 25)  # after expiry: charged once
    assert not store.settle(late, 25)
    status = store.status(mine)
    assert (status.spent, status.held) == (25, 10)


async def test_async_cluster_store(cluster_ports: list[int]) -> None:
    client = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    store = AsyncRedisStore(client, prefix=f"a{uuid.uuid4().hex[:6]}")
    try:
        sync_client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster_ports[0])
        tag1, tag2 = two_tags_on_two_nodes(sync_client)
        sync_client.close()
        first, second = counter("first", 1_000, tag1), counter("second", 100, tag2)
        reservation = await store.areserve(rid(), (first, second), 100, 60)
        assert isinstance(reservation, Reservation)
        denial = await store.areserve(rid(), (first, second), 1, 60)
        assert isinstance(denial, Denial) and denial.counter == second
        assert (await store.astatus(first)).held == 100
        assert await store.asettle(reservation, 70)
        assert (await store.astatus(second)).spent == 70
    finally:
        await client.aclose()


def test_cluster_store_from_url(cluster_ports: list[int]) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{cluster_ports[1]}", cluster=True)
    assert isinstance(store.client, redis.cluster.RedisCluster)
    c = counter("url", 10, "acme")
    assert isinstance(store.reserve(rid(), (c,), 10, 60), Reservation)
    store.close()


def test_limits_held_in_a_cluster_live_in_one_slot_and_bind_token_counters(
    store: RedisStore,
) -> None:
    """bg.set_limit on a cluster: the book's three keys share a slot (one script), and a
    token counter on another node is held and settled by its own unit."""
    from budgetguard import Limit

    store.put_limit(Limit(scope="tenant", key="acme", usd=5, tokens=100, window="day"))
    store.put_plan(("tenant", "beta"), "pro")
    client = store.client
    assert len({client.keyslot(key) for key in store._book_keys()}) == 1  # type: ignore[no-untyped-call]
    book = store.limit_book()
    assert [limit.key for limit in book.limits] == ["acme"] and book.plans == {
        ("tenant", "beta"): "pro"
    }
    assert store.drop_limit(("tenant", "acme", "day")) and not store.drop_limit(
        ("tenant", "acme", "day")
    )
    tag1, tag2 = two_tags_on_two_nodes(client)  # type: ignore[arg-type]
    dollars = counter("dollars", 1_000, tag1)
    tokens = Counter(key="tok", limit=100, window="day", scope="tenant", tag=tag2, unit="tokens")
    held = store.reserve(rid(), (dollars, tokens), 500, 60, tokens=80)
    assert isinstance(held, Reservation)
    assert [store.status(c).held for c in (dollars, tokens)] == [500, 80]
    refused = store.reserve(rid(), (dollars, tokens), 1, 60, tokens=21)
    assert isinstance(refused, Denial) and refused.counter == tokens and refused.requested == 21
    assert store.status(dollars).held == 500  # rolled back on the first node
    assert store.settle(held, 300, tokens=60)
    assert [(store.status(c).spent, store.status(c).held) for c in (dollars, tokens)] == [
        (300, 0),
        (60, 0),
    ]
