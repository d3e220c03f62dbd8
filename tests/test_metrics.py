"""GET /metrics: prometheus_client's text, every series described, the whole server in one
scrape whatever the number of workers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.metrics import Latencies
from tests.factories import register, send
from tests.server import running_server

# HTTP-layer behaviour: PostgreSQL alone (tests/store/ holds the storage contract on both).
pytestmark = pytest.mark.one_backend

# As another module of the service would define one: module level, default registry.
PROBE = Counter("msgsync_test_probe", "A series defined outside app.metrics.")


def samples(text: str) -> Iterator[Sample]:
    for family in text_string_to_metric_families(text):
        yield from family.samples


def value(text: str, name: str, **labels: str) -> float | None:
    for sample in samples(text):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


async def test_every_series_has_help_and_type(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(response.text))
    assert len(families) > 10
    for family in families:
        assert family.documentation, family.name
        # The parser makes any series without a TYPE line "unknown".
        assert family.type != "unknown", family.name
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert f"# HELP {name} " in response.text


async def test_latencies_of_one_turn_are_written_as_observed_one_by_one() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", ["route"], buckets=(0.001, 0.01), registry=registry)
    latencies = Latencies(histogram)
    for seconds in (0.001, 0.0011, 0.5, 0.0004):  # on a bound, inside, above all, below
        latencies.observe(("/ack",), seconds)
    latencies.observe(("/send",), 0.002)
    assert (
        registry.get_sample_value("h_count", {"route": "/ack"}) is None
    )  # not before the turn ends
    await asyncio.sleep(0)
    buckets = {
        le: registry.get_sample_value("h_bucket", {"route": "/ack", "le": le})
        for le in ("0.001", "0.01", "+Inf")
    }
    assert buckets == {"0.001": 2, "0.01": 3, "+Inf": 4}
    assert registry.get_sample_value("h_sum", {"route": "/ack"}) == pytest.approx(0.5025)
    assert registry.get_sample_value("h_count", {"route": "/send"}) == 1
    latencies.observe(("/send",), 0.003)
    latencies.write()  # as a scrape does
    assert registry.get_sample_value("h_count", {"route": "/send"}) == 2


async def test_openmetrics_when_the_scraper_asks_for_it(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "msgsync_waiting_long_polls" in response.text


async def test_the_service_and_process_series_are_there(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    for name in (
        "msgsync_waiting_long_polls",
        "msgsync_listener_up",
        "msgsync_db_pool_checked_out",
        "msgsync_wakeups_published_total",
        "msgsync_wakeups_received_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ):
        assert value(text, name) is not None, name
    assert value(text, "msgsync_listener_up") == 1


async def test_a_series_defined_by_another_module_is_exported(client: httpx.AsyncClient) -> None:
    before = value((await client.get("/metrics")).text, "msgsync_test_probe_total")
    assert before is not None
    PROBE.inc(3)
    assert value((await client.get("/metrics")).text, "msgsync_test_probe_total") == before + 3


async def test_sends_count_their_wakeups(client: httpx.AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    before = value((await client.get("/metrics")).text, "msgsync_wakeups_published_total")
    assert before is not None
    await send(client, alice, bob.user_id, "one")
    await send(client, bob, alice.user_id, "two")
    after = value((await client.get("/metrics")).text, "msgsync_wakeups_published_total")
    assert after == before + 2


async def test_requests_are_labelled_by_route_template_never_by_path(
    client: httpx.AsyncClient,
) -> None:
    alice = await register(client)
    route = "/conversations/{peer}/messages"
    labels = {"method": "GET", "route": route, "status": "200"}
    before = value(
        (await client.get("/metrics")).text, "msgsync_http_request_duration_seconds_count", **labels
    )
    for peer in ("peer-one", "peer-two", "peer-three"):
        response = await client.get(f"/conversations/{peer}/messages", headers=alice.headers)
        assert response.status_code == 200
    assert (await client.get("/no/such/path")).status_code == 404
    text = (await client.get("/metrics")).text
    assert value(text, "msgsync_http_request_duration_seconds_count", **labels) == (before or 0) + 3
    assert value(
        text, "msgsync_http_request_duration_seconds_count", route="unmatched", status="404"
    )
    routes = {s.labels.get("route", "") for s in samples(text)}
    assert not any("peer-" in r or "no/such" in r for r in routes)


# Several workers: prometheus_client's multiprocess mode, one scrape for the whole server.


async def _scrape(url: str) -> str:
    # A fresh connection each time: the kernel hands it to either worker.
    async with httpx.AsyncClient(base_url=url) as client:
        return (await client.get("/metrics")).text


async def _unauthorised(url: str, count: int) -> None:
    for _ in range(count):
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/devices")).status_code == 401


def _files(directory: Path) -> list[Path]:
    return list(directory.glob("*.db"))


UNAUTHORISED = {"method": "GET", "route": "/devices", "status": "401"}


@pytest.mark.server
async def test_any_worker_answers_for_the_whole_server(postgresql_url: str) -> None:
    with running_server(postgresql_url, workers=2) as server:
        await _unauthorised(server.url, 20)
        for _ in range(6):
            text = await _scrape(server.url)
            assert value(text, "msgsync_http_request_duration_seconds_count", **UNAUTHORISED) == 20
            pids = {s.labels["pid"] for s in samples(text) if s.name == "process_cpu_seconds_total"}
            assert len(pids) == 2, pids


@pytest.mark.server
async def test_waiting_long_polls_are_summed_over_the_workers(postgresql_url: str) -> None:
    with running_server(postgresql_url, workers=2) as server:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            sender = await register(client)
            devices = [await register(client) for _ in range(6)]
            polls = [
                asyncio.create_task(
                    client.get("/sync", params={"since": 0, "timeout": 20}, headers=d.headers)
                )
                for d in devices
            ]
            for _ in range(200):
                if value(await _scrape(server.url), "msgsync_waiting_long_polls") == 6:
                    break
                await asyncio.sleep(0.05)
            for _ in range(6):
                assert value(await _scrape(server.url), "msgsync_waiting_long_polls") == 6
            for device in devices:
                await send(client, sender, device.user_id, "wake")
            assert all(r.status_code == 200 for r in await asyncio.gather(*polls))
            assert value(await _scrape(server.url), "msgsync_waiting_long_polls") == 0


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("workers", [1, 2])
async def test_an_operators_directory_is_emptied_at_start(
    postgresql_url: str, tmp_path: Path, workers: int
) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with running_server(postgresql_url, workers=workers, env=env) as server:
        await _unauthorised(server.url, 3)
        assert (
            value(
                await _scrape(server.url),
                "msgsync_http_request_duration_seconds_count",
                **UNAUTHORISED,
            )
            == 3
        )
    assert _files(tmp_path)  # the counts of the first run were on disk
    with running_server(postgresql_url, workers=2, env=env) as server:
        await _unauthorised(server.url, 1)
        assert (
            value(
                await _scrape(server.url),
                "msgsync_http_request_duration_seconds_count",
                **UNAUTHORISED,
            )
            == 1
        )


async def test_metrics_behind_a_token_when_one_is_set(database_url: str) -> None:
    """MSGSYNC_METRICS_TOKEN: /metrics then asks for that bearer token (401 otherwise,
    a device's token included); without it, /metrics stays public."""
    with running_server(database_url, env={"MSGSYNC_METRICS_TOKEN": "s3cret-scrape"}) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            device = await register(client)
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": "Bearer s3cret-scrap"},
                {"Authorization": "Basic s3cret-scrape"},
                device.headers,
            ):
                response = await client.get("/metrics", headers=headers)
                assert response.status_code == 401, (headers, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                assert response.json()["code"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
                assert "msgsync_" not in response.text
            response = await client.get(
                "/metrics", headers={"Authorization": "Bearer s3cret-scrape"}
            )
            assert response.status_code == 200, response.text
            assert value(response.text, "msgsync_waiting_long_polls") == 0
    with running_server(database_url) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get("/metrics")
            assert response.status_code == 200, response.text
            assert value(response.text, "msgsync_waiting_long_polls") == 0
