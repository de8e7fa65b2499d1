"""Authenticated Kafka: SASL/SCRAM logins and ACLs on a real local broker.

The ``secure_kafka`` broker (``conftest.py``) takes only SCRAM logins and
enforces ACLs: nobody but the admin may do anything until granted. Users:

- ``alice`` gets, per test, what a queue and a worker need;
- ``bob`` is never granted anything;
- ``carol`` is granted partial rights (a group without its topic, another
  topic than the one she writes to);
- ``dave`` runs a worker with retries, with the ACLs the README recommends.

Every scenario runs with both client families; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jobfuncs
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import (
    ConfigResource,
    ConfigSource,
    OffsetSpec,
    ResourceType,
    ScramMechanism,
)
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from kq import EnqueueError, Queue, RetryPolicy, Worker
from kq.clients import ClientName
from kq.local import LocalAuth, LocalKafka, LocalKafkaError

CLIENTS: list[ClientName] = ["kafka-python", "confluent"]
DELIVERY_TIMEOUT = 3.0  # the enqueue bound for the failing producers
SLACK = 2.5  # plus confluent's host lookup when the Queue is built, plus scheduling
WORKER_TIMEOUT = 60.0  # bound for a worker that should process a job
DENIED_WINDOW = 6.0  # how long a worker without rights is watched for taking a job
RDKAFKA_LOG = "test_auth.rdkafka"  # librdkafka's log lines, routed into logging

pytestmark = pytest.mark.timeout(180)

# Jobs run in the worker's thread in this process, so this records real runs.
RAN: list[str] = []
STATIC_BROKER_CONFIG = ConfigSource.STATIC_BROKER_CONFIG.value


def record_run(token: str) -> str:
    """A job that leaves a trace in this process when it runs."""
    RAN.append(token)
    return token


def fail_once(token: str) -> str:
    """A job whose first run fails and whose second succeeds."""
    RAN.append(token)
    if RAN.count(token) < 2:
        raise ValueError("the first attempt fails")
    return token


# -- helpers ------------------------------------------------------------------


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def credentials(kafka: LocalKafka, user: str, client: ClientName, **extra: Any) -> dict[str, Any]:
    """Client settings of ``user``; confluent's log lines go to logging, not stderr."""
    config: dict[str, Any] = dict(kafka.client_config(user, client=client, **extra))
    if client == "confluent":
        config["logger"] = logging.getLogger(RDKAFKA_LOG)
    return config


def end_offset(kafka: LocalKafka, topic: str) -> int:
    """The topic's end offset (one partition), asked with the admin's AdminClient."""
    admin = kafka.admin_client()
    futures = admin.list_offsets(
        {TopicPartition(topic, 0): OffsetSpec.latest()}, request_timeout=10
    )
    return sum(int(future.result(10).offset) for future in futures.values())


def committed(kafka: LocalKafka, group: str, topic: str) -> int | None:
    """The group's committed offset for partition 0 (read as the admin), or None."""
    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap_servers, "group.id": group, **kafka.client_config()}
    )
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        consumer.close()
    return None if tp.offset < 0 else int(tp.offset)


def admin_queue(kafka: LocalKafka, topic: str) -> Queue:
    return Queue.connect(kafka.bootstrap_servers, topic, producer_config=kafka.client_config())


def close_producer(queue: Queue) -> None:
    producer = queue.producer
    if isinstance(producer, KafkaProducer):
        producer.close(timeout=5)
        return
    # A confluent producer that hit a fatal error raises it from every flush().
    with contextlib.suppress(KafkaException):
        producer.flush(5)


def close_consumer(worker: Worker) -> None:
    consumer = worker.consumer
    if isinstance(consumer, KafkaConsumer):
        consumer.close(autocommit=False)
    else:
        consumer.close()


class Calls:
    """A worker callback that records every outcome."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    def __call__(self, status: str, message: Any, job: Any, result: Any, *_: Any) -> None:
        self.calls.append((status, job, result))


class Running:
    """``worker.start()`` on a thread: what it returned or raised, and whether it still runs."""

    def __init__(self, worker: Worker, max_messages: int | None = None) -> None:
        self.worker = worker
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(max_messages,), daemon=True)
        self.thread.start()

    def _run(self, max_messages: int | None) -> None:
        try:
            self.outcome.append(self.worker.start(max_messages=max_messages))
        except BaseException as exc:
            self.outcome.append(exc)

    def stop(self, timeout: float = 30.0) -> Any:
        if self.thread.is_alive():
            self.worker.stop()
            self.thread.join(timeout)
        if self.thread.is_alive():
            self.worker.stop(immediately=True)
            self.thread.join(10)
            pytest.fail(f"the worker did not stop within {timeout} s of stop()")
        return self.outcome[0]


@pytest.fixture(autouse=True)
def _clean_runs() -> Iterator[None]:
    RAN.clear()
    yield
    RAN.clear()


# -- the harness: LocalAuth and the broker's settings ------------------------


def test_local_auth_checks_its_input_and_hides_passwords() -> None:
    auth = LocalAuth(admin=("root", "r00t pw!"), users={"alice": "a-secret"})
    assert "r00t" not in repr(auth) and "a-secret" not in repr(auth)
    assert repr(auth) == (
        "LocalAuth(admin='root', users=['alice'], mechanisms=('SCRAM-SHA-256', 'SCRAM-SHA-512'))"
    )
    assert auth.client_config("alice") == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": "a-secret",
    }
    assert auth.client_config(client="kafka-python", mechanism="SCRAM-SHA-512") == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "root",
        "sasl_plain_password": "r00t pw!",
    }
    with pytest.raises(LocalKafkaError, match="no user 'mallory'"):
        auth.client_config("mallory")
    with pytest.raises(LocalKafkaError, match="not enabled"):
        LocalAuth(mechanisms=("SCRAM-SHA-512",)).client_config(mechanism="SCRAM-SHA-256")
    for bad in (
        {"users": {"al ice": "x"}},
        {"users": {"alice": ""}},
        {"users": {"alice": 'with"quote'}},
        {"users": {"alice": "naïve"}},
        {"users": {"admin": "again"}},
        {"admin": ("admin",)},
        {"mechanisms": ("PLAIN",)},
        {"mechanisms": ()},
    ):
        with pytest.raises(ValueError):
            LocalAuth(**bad)
    # The storage tool gets salted hashes, never the passwords themselves.
    arguments = " ".join(auth.scram_arguments())
    assert "r00t pw!" not in arguments and "a-secret" not in arguments
    assert arguments.count("--add-scram") == 4
    assert "SCRAM-SHA-512=[name=alice,iterations=4096,salt=" in arguments

    plain = LocalKafka(1)
    assert plain.auth is None and plain.client_config() == {}
    with pytest.raises(LocalKafkaError, match="without auth"):
        plain.grant("alice", "READ", topic="t")
    secured = LocalKafka(1, auth=auth)
    with pytest.raises(ValueError, match="exactly one"):
        secured.grant("alice", "READ")
    with pytest.raises(ValueError, match="exactly one"):
        secured.grant("alice", "READ", topic="t", group="g")
    with pytest.raises(ValueError, match="unknown ACL operation 'FLY'"):
        secured.grant("alice", ["READ", "FLY"], topic="t")
    with pytest.raises(LocalKafkaError, match="not started"):
        secured.grant("alice", "READ", topic="t")


def test_broker_enforces_scram_and_acls(secure_kafka: LocalKafka) -> None:
    """The broker's own view of its settings, and the users created at format time."""
    admin = secure_kafka.admin_client()
    resource = ConfigResource(ResourceType.BROKER, "1")
    entries = admin.describe_configs([resource], request_timeout=10)[resource].result(10)
    config = {name: entry.value for name, entry in entries.items()}
    assert config["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    # The broker hides these two (keys its own config does not define are
    # treated as sensitive); they are set in the node's server.properties.
    for hidden in ("super.users", "allow.everyone.if.no.acl.found"):
        assert entries[hidden].is_sensitive and entries[hidden].source == STATIC_BROKER_CONFIG
    written = secure_kafka._node(1).config_path.read_text().splitlines()
    assert "super.users=User:admin" in written
    assert "allow.everyone.if.no.acl.found=false" in written
    protocol_map = config["listener.security.protocol.map"]
    protocols = dict(item.split(":") for item in protocol_map.split(","))
    assert protocols == {"CONTROLLER": "SASL_PLAINTEXT", "SASL_PLAINTEXT": "SASL_PLAINTEXT"}
    assert config["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:")
    assert "CONTROLLER://127.0.0.1:" in config["listeners"]
    assert config["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    assert config["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-256"
    assert config["sasl.mechanism.controller.protocol"] == "PLAIN"

    described = admin.describe_user_scram_credentials(request_timeout=10).result(10)
    assert sorted(described) == ["admin", "alice", "bob", "carol", "dave"]
    for description in described.values():
        mechanisms = {info.mechanism for info in description.scram_credential_infos}
        assert mechanisms == {ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512}
        assert {info.iterations for info in description.scram_credential_infos} == {4096}


# -- who may enqueue and consume ----------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("client", CLIENTS)
def test_queue_and_worker_with_credentials_work(
    secure_kafka: LocalKafka, client: ClientName, mechanism: str
) -> None:
    topic, group = fresh("auth-ok"), fresh("g-auth-ok")
    secure_kafka.create_topic(topic)
    secure_kafka.grant_producer("alice", topic)
    secure_kafka.grant_consumer("alice", topic, group)
    login = credentials(secure_kafka, "alice", client, mechanism=mechanism)
    bootstrap = secure_kafka.bootstrap_servers

    queue = Queue.connect(bootstrap, topic, client=client, producer_config=login)
    try:
        job = queue.enqueue(jobfuncs.add, 2, 3)
    finally:
        close_producer(queue)
    assert end_offset(secure_kafka, topic) == 1

    calls = Calls()
    worker = Worker.connect(
        bootstrap,
        topic,
        group,
        client=client,
        consumer_config=login,
        callback=calls,
        scheduling=False,
    )
    try:
        running = Running(worker, max_messages=1)
        running.thread.join(WORKER_TIMEOUT)
        assert not running.thread.is_alive(), f"no job processed within {WORKER_TIMEOUT} s"
        assert running.stop() == 1
    finally:
        close_consumer(worker)
    [(status, ran, result)] = calls.calls
    assert (status, ran.id, result) == ("success", job.id, 5)
    assert committed(secure_kafka, group, topic) == 1  # OffsetCommit allowed by group READ


@pytest.mark.parametrize("client", CLIENTS)
def test_worker_with_retries_needs_only_its_topic_and_group_prefixes(
    secure_kafka: LocalKafka, client: ClientName
) -> None:
    """The ACLs of the README: a failed job is retried through the delay tiers, a delayed
    job waits in them. kq's own helper clients (tier topics, retries, forwarder) log in
    as the queue's producer and the worker's consumer do: no login given twice."""
    topic, group = fresh("auth-retry"), fresh("g-auth-retry")
    secure_kafka.create_topic(topic)
    # The producer: its topic and the delay tiers (prefix <topic>.kq-delay-) only.
    secure_kafka.grant_producer("alice", topic, delay=True)
    # The job topic (WRITE: the forwarder brings due retries home), the
    # delay-tier and dead-letter topics kq creates, and both consumer groups.
    secure_kafka.grant_worker("dave", topic, group)

    queue = Queue.connect(
        secure_kafka.bootstrap_servers,
        topic,
        client=client,
        producer_config=credentials(secure_kafka, "alice", client),
    )
    try:
        queue.using(retry=RetryPolicy(max_attempts=3, backoff=0.2, jitter=0)).enqueue(
            fail_once, "retried"
        )
        queue.using(delay=0.5).enqueue(record_run, "delayed")
    finally:
        close_producer(queue)
    calls = Calls()
    worker = Worker.connect(
        secure_kafka.bootstrap_servers,
        topic,
        group,
        client=client,
        consumer_config=credentials(secure_kafka, "dave", client),
        callback=calls,
    )
    try:
        running = Running(worker, max_messages=3)
        running.thread.join(WORKER_TIMEOUT)
        assert not running.thread.is_alive(), f"no retry processed within {WORKER_TIMEOUT} s"
        assert running.stop() == 3
    finally:
        close_consumer(worker)
    assert sorted(status for status, _, _ in calls.calls) == ["failure", "success", "success"]
    assert sorted(RAN) == ["delayed", "retried", "retried"]
    topics = secure_kafka.admin_client().list_topics(timeout=10).topics
    assert f"{topic}.kq-delay-1s" in topics and f"{topic}.kq-dead" in topics


@pytest.mark.parametrize("client", CLIENTS)
def test_recommended_producer_acls_allow_delays_but_not_dead_letters(
    secure_kafka: LocalKafka, client: ClientName
) -> None:
    """A producer allowed ``delay=`` cannot write dead letters for the operator to read.

    The ACLs recommended before (prefix ``<topic>.kq-``) let it: shown with ``carol``.
    """
    topic = fresh("auth-dead")
    secure_kafka.create_topic(topic)
    secure_kafka.create_topic(f"{topic}.kq-dead")
    secure_kafka.grant_producer("alice", topic, delay=True)
    queue = Queue.connect(
        secure_kafka.bootstrap_servers,
        topic,
        client=client,
        delivery_timeout=DELIVERY_TIMEOUT,
        producer_config=credentials(secure_kafka, "alice", client),
    )
    forger = Queue.connect(
        secure_kafka.bootstrap_servers,
        f"{topic}.kq-dead",
        client=client,
        delivery_timeout=DELIVERY_TIMEOUT,
        producer_config=credentials(secure_kafka, "alice", client),
    )
    try:
        queue.enqueue(jobfuncs.add, 1, 1)
        queue.using(delay=30).enqueue(jobfuncs.add, 2, 2)  # a delay tier: allowed
        with pytest.raises(EnqueueError):
            forger.enqueue(jobfuncs.add, 3, 3)
    finally:
        close_producer(queue)
        close_producer(forger)
    assert end_offset(secure_kafka, topic) == 1
    assert end_offset(secure_kafka, f"{topic}.kq-dead") == 0
    assert end_offset(secure_kafka, f"{topic}.kq-delay-1m") == 1  # the tier covering 30 s

    # the former recommendation, for contrast
    secure_kafka.grant_producer("carol", topic)
    secure_kafka.grant(
        "carol", ["WRITE", "DESCRIBE", "CREATE"], topic=f"{topic}.kq-", prefixed=True
    )
    old = Queue.connect(
        secure_kafka.bootstrap_servers,
        f"{topic}.kq-dead",
        client=client,
        producer_config=credentials(secure_kafka, "carol", client),
    )
    try:
        old.enqueue(jobfuncs.add, 4, 4)
    finally:
        close_producer(old)
    assert end_offset(secure_kafka, f"{topic}.kq-dead") == 1


@pytest.mark.parametrize("login", ["no-credentials", "wrong-password"])
@pytest.mark.parametrize("client", CLIENTS)
def test_producer_without_valid_credentials_cannot_enqueue(
    secure_kafka: LocalKafka, client: ClientName, login: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    topic = fresh("auth-nologin")
    secure_kafka.create_topic(topic)
    secure_kafka.grant_producer("alice", topic)  # alice could; a stranger cannot
    config: dict[str, Any] = {}
    # A wrong password is refused only once the SCRAM exchange completes:
    # leave time for it on a loaded machine, so the client can log why.
    delivery_timeout = 2 * DELIVERY_TIMEOUT if login == "wrong-password" else DELIVERY_TIMEOUT
    if login == "wrong-password":
        config = credentials(secure_kafka, "alice", client)
        config["sasl.password" if client == "confluent" else "sasl_plain_password"] = "guess"
    elif client == "confluent":
        config = {"logger": logging.getLogger(RDKAFKA_LOG)}

    queue: Queue | None = None
    steps = {"connect": 0.0, "enqueue": 0.0}  # seconds each step took
    with pytest.raises(Exception) as caught:
        started = time.monotonic()
        try:
            queue = Queue.connect(
                secure_kafka.bootstrap_servers,
                topic,
                client=client,
                delivery_timeout=delivery_timeout,
                producer_config=config,
            )
        finally:
            steps["connect"] = time.monotonic() - started
        started = time.monotonic()
        try:
            queue.enqueue(record_run, "intruder")
        finally:
            steps["enqueue"] = time.monotonic() - started
    if queue is not None:
        close_producer(queue)

    # What matters for security: refused, within the bound, nothing written.
    # (confluent: connect looks the brokers up for up to 2 s; kafka-python:
    # connect bootstraps for up to delivery_timeout.)
    assert max(steps.values()) < delivery_timeout + SLACK, steps
    assert end_offset(secure_kafka, topic) == 0
    error = caught.value
    assert isinstance(error, EnqueueError), repr(error)
    assert error.topic == topic
    # Queue.connect checks that the cluster answers before it returns: a
    # refused login is one error there, naming the address and the client's
    # reason, whichever client the queue uses.
    assert queue is None
    assert f"no Kafka broker answered at {secure_kafka.bootstrap_servers}" in str(error)
    if login == "wrong-password":
        assert "authentication failed" in str(error).lower(), str(error)
    else:
        # The broker drops a client that does not log in; if it had not done so
        # by the deadline (a loaded machine), librdkafka's own words are all there is.
        text = str(error).lower()
        assert "disconnected" in text or "broker transport failure" in text, str(error)


@pytest.mark.parametrize("client", CLIENTS)
def test_producer_without_write_permission_cannot_enqueue(
    secure_kafka: LocalKafka, client: ClientName
) -> None:
    """carol logs in and may write elsewhere, but not to this topic."""
    topic, elsewhere = fresh("auth-nowrite"), fresh("auth-carol-own")
    secure_kafka.create_topic(topic)
    secure_kafka.create_topic(elsewhere)
    secure_kafka.grant_producer("carol", elsewhere)
    secure_kafka.grant("carol", ["READ", "DESCRIBE"], topic=topic)  # reading is not writing

    queue = Queue.connect(
        secure_kafka.bootstrap_servers,
        topic,
        client=client,
        delivery_timeout=DELIVERY_TIMEOUT,
        producer_config=credentials(secure_kafka, "carol", client),
    )
    try:
        started = time.monotonic()
        with pytest.raises(EnqueueError) as caught:
            queue.enqueue(record_run, "intruder")
        elapsed = time.monotonic() - started
        proof = Queue.connect(
            secure_kafka.bootstrap_servers,
            elsewhere,
            client=client,
            producer_config=credentials(secure_kafka, "carol", client),
        )
        try:
            proof.enqueue(record_run, "allowed")  # her login itself works
        finally:
            close_producer(proof)
    finally:
        close_producer(queue)
    assert elapsed < DELIVERY_TIMEOUT, f"took {elapsed:.1f} s"
    assert caught.value.topic == topic
    assert "authorization" in str(caught.value).lower(), str(caught.value)
    assert end_offset(secure_kafka, topic) == 0
    assert end_offset(secure_kafka, elsewhere) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_producer_without_any_acl_cannot_enqueue(
    secure_kafka: LocalKafka, client: ClientName
) -> None:
    """bob logs in but has no ACL at all (not even WRITE on another topic)."""
    topic = fresh("auth-noacl")
    secure_kafka.create_topic(topic)
    queue = Queue.connect(
        secure_kafka.bootstrap_servers,
        topic,
        client=client,
        delivery_timeout=DELIVERY_TIMEOUT,
        producer_config=credentials(secure_kafka, "bob", client),
    )
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as caught:  # which one is the question
            queue.enqueue(record_run, "intruder")
        elapsed = time.monotonic() - started
    finally:
        close_producer(queue)
    assert elapsed < DELIVERY_TIMEOUT + SLACK, f"took {elapsed:.1f} s"
    assert end_offset(secure_kafka, topic) == 0

    # (confluent: an idempotent producer asks for a producer id, which needs
    # WRITE on some topic; the refusal is a fatal client error, which kq names)
    error = caught.value
    assert isinstance(error, EnqueueError), repr(error)
    assert "authorization" in str(error).lower(), str(error)


@pytest.mark.parametrize("rights", ["no-acl", "group-only"])
@pytest.mark.parametrize("client", CLIENTS)
def test_consumer_without_read_permission_gets_no_job_and_stops(
    secure_kafka: LocalKafka, client: ClientName, rights: str
) -> None:
    """bob has no ACL; carol may use her group but not read the topic."""
    topic, group = fresh("auth-noread"), fresh("g-auth-noread")
    secure_kafka.create_topic(topic)
    queue = admin_queue(secure_kafka, topic)
    try:
        queue.enqueue(record_run, "must-not-run")
    finally:
        close_producer(queue)
    user = "bob" if rights == "no-acl" else "carol"
    if rights == "group-only":
        secure_kafka.grant("carol", "READ", group=group)

    calls = Calls()
    worker = Worker.connect(
        secure_kafka.bootstrap_servers,
        topic,
        group,
        client=client,
        consumer_config=credentials(secure_kafka, user, client),
        callback=calls,
        scheduling=False,
    )
    try:
        running = Running(worker)
        running.thread.join(DENIED_WINDOW)
        still_running = running.thread.is_alive()
        outcome = running.stop()
    finally:
        close_consumer(worker)

    # What matters for security: the job was neither run nor taken.
    assert RAN == [] and calls.calls == []
    assert end_offset(secure_kafka, topic) == 1
    assert committed(secure_kafka, group, topic) is None

    # The worker does not wait forever for jobs it may not read: start()
    # raises the broker's reason, whichever client and missing right.
    assert not still_running, f"the worker still polls {DENIED_WINDOW} s after being denied"
    assert isinstance(outcome, BaseException), repr(outcome)
    if client == "kafka-python":
        denied = {"no-acl": GroupAuthorizationFailedError}
        assert isinstance(outcome, denied.get(rights, TopicAuthorizationFailedError)), repr(outcome)
    else:
        code = "GROUP_AUTHORIZATION_FAILED" if rights == "no-acl" else "TOPIC_AUTHORIZATION_FAILED"
        assert code in str(outcome), repr(outcome)


def test_grant_is_enforced_at_once(secure_kafka: LocalKafka) -> None:
    """``grant`` returns only when the broker enforces the new ACL."""
    topic = fresh("auth-grant")
    secure_kafka.create_topic(topic)
    config = {
        "bootstrap.servers": secure_kafka.bootstrap_servers,
        **credentials(secure_kafka, "carol", "confluent"),
    }
    probe = Consumer({**config, "group.id": fresh("g-probe")})
    try:
        before = probe.list_topics(topic, timeout=10).topics[topic]
        assert before.error is not None and "AUTHORIZATION" in before.error.name()
        secure_kafka.grant("User:carol", "DESCRIBE", topic=topic)
        after = probe.list_topics(topic, timeout=10).topics[topic]
        assert after.error is None and list(after.partitions) == [0]
    finally:
        probe.close()
