"""Shared fixtures: a real Kafka for the whole session, topics, a 3-node cluster.

The brokers come from ``kq.local.LocalKafka``. Set ``KQ_TEST_BOOTSTRAP`` to
``host:port,...`` to run against an existing cluster instead: no broker is
started then, and tests that stop or kill nodes are skipped.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from kq.local import ExternalKafka, LocalAuth, LocalKafka, _jvms_started_by

EXTERNAL = os.environ.get("KQ_TEST_BOOTSTRAP", "").strip()
SKIP_EXTERNAL = (
    f"KQ_TEST_BOOTSTRAP={EXTERNAL} points at an external cluster; "
    "tests that stop or kill broker nodes need the suite's own local brokers"
)

MakeTopic = Callable[..., str]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not EXTERNAL:
        return
    skip = pytest.mark.skip(reason=SKIP_EXTERNAL)
    for item in items:
        if item.get_closest_marker("kills_nodes") or item.get_closest_marker("cluster"):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    # Runs after the session fixtures are torn down: any broker JVM this
    # process started and that is still alive has leaked.
    result = yield
    leaked = _jvms_started_by(os.getpid())
    if leaked:
        for pid in leaked:
            os.kill(pid, 9)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"broker JVM(s) {leaked} outlived the test session (now killed)"
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True, bold=True)
        else:
            print(f"ERROR: {message}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalKafka | ExternalKafka]:
    """The session's broker: one local node, or the cluster named by KQ_TEST_BOOTSTRAP."""
    if EXTERNAL:
        yield ExternalKafka(EXTERNAL)
        return
    with LocalKafka(1) as local:
        yield local


@pytest.fixture(scope="session")
def bootstrap(kafka: LocalKafka | ExternalKafka) -> str:
    """Bootstrap servers of the session's broker."""
    return kafka.bootstrap_servers


def _topic_name(request: pytest.FixtureRequest) -> str:
    test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"t-{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_topic(kafka: LocalKafka | ExternalKafka, request: pytest.FixtureRequest) -> MakeTopic:
    """Factory: ``make_topic(partitions=1, replication_factor=None, config=None)`` -> new topic."""

    def make(
        partitions: int = 1,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
    ) -> str:
        name = _topic_name(request)
        kafka.create_topic(name, partitions, replication_factor, config)
        return name

    return make


@pytest.fixture
def topic(make_topic: MakeTopic) -> str:
    """A fresh topic with one partition on the session's broker."""
    return make_topic()


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalKafka]:
    """A local 3-node cluster (started on first use); every node runs when a test starts."""
    if EXTERNAL:
        pytest.skip(SKIP_EXTERNAL)
    with LocalKafka(3) as local:
        yield local


@pytest.fixture(autouse=True)
def _restart_cluster_nodes(request: pytest.FixtureRequest) -> Iterator[None]:
    # Tests may leave cluster nodes stopped or killed; bring them back so
    # that the next test gets all three.
    if "cluster" not in request.fixturenames:
        yield
        return
    local: LocalKafka = request.getfixturevalue("cluster")
    yield
    for node_id in local.node_ids:
        if not local.is_running(node_id):
            local.start_node(node_id)


# Users of the ``secure_kafka`` broker. None but the admin has any right until
# a test grants it (ACLs are enforced and nothing is allowed without one).
SECURE_ADMIN = ("admin", "admin-secret")
SECURE_USERS = {
    "alice": "alice-secret",
    "bob": "bob-secret",
    "carol": "carol-secret",
    "dave": "dave-secret",
}


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[LocalKafka]:
    """A local single node with SASL/SCRAM logins and ACLs (started on first use).

    Users: the super user ``admin`` and ``alice``, ``bob``, ``carol``, ``dave``,
    who may do nothing until granted (``secure_kafka.grant(...)``). Client settings:
    ``secure_kafka.client_config(user, client=...)``.
    """
    if EXTERNAL:
        pytest.skip(
            f"KQ_TEST_BOOTSTRAP={EXTERNAL} points at an external cluster; "
            "the SASL/ACL tests need a local broker of their own"
        )
    auth = LocalAuth(admin=SECURE_ADMIN, users=SECURE_USERS)
    with LocalKafka(1, auth=auth) as local:
        yield local
