"""`.env.example` is the operators' list of settings: it names each one, with its default; and
the database URLs, read the one way every connection reads them."""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from app.config import Settings
from app.notifier import libpq_url

EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def _example_names() -> set[str]:
    lines = EXAMPLE.read_text().splitlines()
    return {line.partition("=")[0] for line in lines if line.startswith("MSGSYNC_")}


def test_the_example_names_every_setting_and_nothing_else() -> None:
    assert _example_names() == {f"MSGSYNC_{name.upper()}" for name in Settings.model_fields}


def test_the_example_states_the_defaults() -> None:
    from_example = Settings(_env_file=EXAMPLE)
    defaults = Settings(_env_file=None)
    assert from_example.model_dump() == defaults.model_dump()


MULTI_HOST = {
    "postgres://me:pw@h1:6002,h2:6001/msgsync?target_session_attrs=read-write",
    "postgresql://me:pw@h1:6002,h2:6001/msgsync",
    "postgresql://me:pw@/msgsync?host=h1:6002&host=h2:6001",
    "postgresql+psycopg://me:pw@/msgsync?host=h1,h2&port=6002,6001",
}


def test_every_multi_host_form_reads_as_the_same_libpq_parameters() -> None:
    for url in MULTI_HOST:
        settings = Settings(_env_file=None, database_url=url)
        assert conninfo_to_dict(libpq_url(settings.database_url)) == {
            "host": "h1,h2",
            "port": "6002,6001",
            "dbname": "msgsync",
            "user": "me",
            "password": "pw",
            "target_session_attrs": "read-write",
        }, url


def test_the_operators_target_session_attrs_and_a_single_host_are_kept() -> None:
    mine = "postgresql://me@h1:1,h2:2/msgsync?target_session_attrs=primary"
    params = conninfo_to_dict(libpq_url(Settings(_env_file=None, database_url=mine).database_url))
    assert params["target_session_attrs"] == "primary"
    single = Settings(_env_file=None, database_url="postgres://me@h1:5433/msgsync")
    assert single.database_url == "postgresql+psycopg://me@h1:5433/msgsync"


def test_replica_urls_may_list_several_hosts_each() -> None:
    settings = Settings(
        _env_file=None,
        database_replica_urls="postgres://r1:5432,r2:5432/msgsync, "
        "postgresql://me@/msgsync?host=r3,r4&port=1,2,postgresql://r5/msgsync",
    )
    hosts = [conninfo_to_dict(libpq_url(u))["host"] for u in settings.replica_urls]
    assert hosts == ["r1,r2", "r3,r4", "r5"]
    # Replicas are read from whatever their role: no read-write requirement added.
    assert all("target_session_attrs" not in u for u in settings.replica_urls)
