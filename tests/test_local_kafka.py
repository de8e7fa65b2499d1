"""kq.local.LocalKafka against real brokers: round trips, restarts, node loss, cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaPythonPartition

from kq.local import (
    KAFKA_VERSION,
    ExternalKafka,
    LocalKafka,
    LocalKafkaError,
    _is_alive,
    _jvms_started_by,
    ensure_broker_classpath,
)

ROOT = Path(__file__).resolve().parent.parent
CONFTEST = Path(__file__).resolve().parent / "conftest.py"
REAL_JAVA = shutil.which("java")
CLIENTS = ["kafka-python", "confluent"]
Record = tuple[int, bytes, bytes]  # offset, key, value

pytestmark = pytest.mark.timeout(240)


# -- helpers -------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, attempts: int = 300) -> None:
    """Poll ``condition`` every 0.1 s, at most ``attempts`` times."""
    for _ in range(attempts):
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting until {what}")


def messages(count: int, tag: str) -> list[tuple[bytes, bytes]]:
    # Binary values of varied length, including empty ones.
    return [
        (f"{tag}-{i}".encode(), f"{tag}:{i}:".encode() + bytes([i % 256]) * (i % 37))
        for i in range(count)
    ]


def produce(bootstrap: str, topic: str, batch: list[tuple[bytes, bytes]], client: str) -> None:
    """Write every message with acks=all; fail unless all are acknowledged."""
    if client == "kafka-python":
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        try:
            futures = [producer.send(topic, key=key, value=value) for key, value in batch]
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close(timeout=10)
        return
    errors: list[object] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)

    confluent = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True}
    )
    for key, value in batch:
        confluent.produce(topic, key=key, value=value, on_delivery=delivered)
        confluent.poll(0)
    assert confluent.flush(30) == 0
    assert errors == []


def consume(bootstrap: str, topic: str, count: int, client: str) -> list[Record]:
    """Read partition 0 from the start until ``count`` records (bounded number of polls)."""
    records: list[Record] = []
    if client == "kafka-python":
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        try:
            consumer.assign([KafkaPythonPartition(topic, 0)])
            consumer.seek_to_beginning()
            for _ in range(300):
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend((r.offset, r.key, r.value) for r in batch)
                if len(records) >= count:
                    break
        finally:
            consumer.close()
        return records
    confluent = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        confluent.assign([ConfluentPartition(topic, 0, OFFSET_BEGINNING)])
        for _ in range(300):
            for msg in confluent.consume(num_messages=500, timeout=0.2):
                assert msg.error() is None, msg.error()
                records.append((msg.offset(), msg.key(), msg.value()))
            if len(records) >= count:
                break
    finally:
        confluent.close()
    return records


def expected(batch: list[tuple[bytes, bytes]], first_offset: int = 0) -> list[Record]:
    return [(first_offset + i, key, value) for i, (key, value) in enumerate(batch)]


def isr(bootstrap: str, topic: str) -> dict[int, list[int]]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10)
    return {p.id: list(p.isrs) for p in metadata.topics[topic].partitions.values()}


# -- through the session's broker ------------------------------------------------


@pytest.mark.parametrize("consumer_client", CLIENTS)
@pytest.mark.parametrize("producer_client", CLIENTS)
def test_round_trip_of_a_few_hundred_messages(
    bootstrap: str, topic: str, producer_client: str, consumer_client: str
) -> None:
    batch = messages(300, f"{producer_client}-to-{consumer_client}")
    produce(bootstrap, topic, batch, producer_client)
    assert consume(bootstrap, topic, len(batch), consumer_client) == expected(batch)


def test_make_topic_creates_partitions_with_leaders(
    kafka: LocalKafka | ExternalKafka, make_topic: Callable[..., str]
) -> None:
    name = make_topic(partitions=3)
    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap_servers}).list_topics(
        topic=name, timeout=10
    )
    partitions = metadata.topics[name].partitions
    assert sorted(partitions) == [0, 1, 2]
    assert all(p.leader >= 0 for p in partitions.values())


def test_unstarted_instance_says_so() -> None:
    local = LocalKafka(3)
    assert local.node_ids == [1, 2, 3]
    with pytest.raises(LocalKafkaError, match=r"start\(\)"):
        _ = local.bootstrap_servers
    local.stop()  # harmless


# -- own brokers ---------------------------------------------------------------


@pytest.mark.kills_nodes
def test_single_node_keeps_acknowledged_data_across_stop_and_kill(tmp_path: Path) -> None:
    workdir = tmp_path / "kafka"
    before_stop = messages(200, "before-stop")
    before_kill = messages(200, "before-kill")
    with LocalKafka(1, workdir=workdir) as local:
        local.create_topic("durable")
        produce(local.bootstrap_servers, "durable", before_stop, "confluent")
        [pid] = local.pids()
        address = local.node_address(1)

        local.stop_node(1)
        assert not local.is_running(1)
        assert not _is_alive(pid)
        local.start_node(1)
        assert local.node_address(1) == address
        produce(local.bootstrap_servers, "durable", before_kill, "kafka-python")

        local.kill_node(1)
        assert local.pids() == []
        local.start_node(1)
        everything = before_stop + before_kill
        got = consume(local.bootstrap_servers, "durable", len(everything), "confluent")
        assert got == expected(everything)
        assert local.log_tail(1, 1000).count("Kafka Server started") == 3
        pids = local.pids()
    assert not any(_is_alive(pid) for pid in pids)
    assert (workdir / "node-1" / "data" / "meta.properties").is_file()  # a given workdir stays


@pytest.mark.cluster
@pytest.mark.kills_nodes
def test_cluster_loses_no_acknowledged_message_when_a_node_is_killed(cluster: LocalKafka) -> None:
    topic = f"replicated-{uuid.uuid4().hex[:8]}"
    cluster.create_topic(
        topic, partitions=3, replication_factor=3, config={"min.insync.replicas": "2"}
    )
    replicas = isr(cluster.bootstrap_servers, topic)
    assert all(sorted(members) == [1, 2, 3] for members in replicas.values())
    metadata = AdminClient({"bootstrap.servers": cluster.bootstrap_servers}).list_topics(
        topic=topic, timeout=10
    )
    victim = int(metadata.topics[topic].partitions[0].leader)

    acked: set[int] = set()
    failed: list[object] = []

    def delivered(err: object, msg: object) -> None:
        if err is None:
            acked.add(int(msg.value()))  # type: ignore[attr-defined]
        else:
            failed.append(err)

    producer = Producer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 60000,
        }
    )
    total, batch = 3000, 50
    killed_at: int | None = None
    for start in range(0, total, batch):
        for i in range(start, start + batch):
            value = str(i).encode()
            producer.produce(topic, key=value, value=value, on_delivery=delivered)
        producer.poll(0.05)
        if killed_at is None and (len(acked) >= 300 or start >= total // 2):
            cluster.kill_node(victim)
            killed_at = start + batch
    assert killed_at is not None
    assert producer.flush(90) == 0
    assert acked, failed
    assert any(value >= killed_at for value in acked), "nothing acknowledged after the kill"

    consumer = Consumer(
        {
            "bootstrap.servers": cluster.bootstrap_servers,
            "group.id": f"g-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumed: set[int] = set()
    try:
        consumer.assign([ConfluentPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
        for _ in range(300):
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    consumed.add(int(msg.value()))
            if acked <= consumed:
                break
    finally:
        consumer.close()
    assert acked - consumed == set()

    cluster.start_node(victim)
    wait_until(
        lambda: all(victim in isr_ for isr_ in isr(cluster.bootstrap_servers, topic).values()),
        f"node {victim} is back in the ISR of every partition",
    )


@pytest.mark.kills_nodes
def test_startup_failure_raises_with_the_broker_log(tmp_path: Path) -> None:
    with socket.socket() as busy, socket.socket() as free:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        free.bind(("127.0.0.1", 0))
        busy_port, controller_port = busy.getsockname()[1], free.getsockname()[1]
        free.close()
        listeners = f"PLAINTEXT://127.0.0.1:{busy_port},CONTROLLER://127.0.0.1:{controller_port}"
        local = LocalKafka(
            1,
            workdir=tmp_path / "kafka",
            broker_config={
                "listeners": listeners,
                "advertised.listeners": listeners,
                "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            },
        )
        with pytest.raises(LocalKafkaError, match="node 1 exited") as failure:
            local.start()
    assert "Address already in use" in str(failure.value)
    assert local.pids() == []


# -- no JVM outlives its owner ---------------------------------------------------

CHILD = """
import json, sys
from kq.local import LocalKafka
kafka = LocalKafka(1, workdir=sys.argv[1]).start()
print(json.dumps(kafka.pids()), flush=True)
sys.stdin.readline()
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.kills_nodes
@pytest.mark.parametrize("ending", ["sigkill", "exit-without-stop"])
def test_broker_jvm_dies_with_the_python_process_that_started_it(
    tmp_path: Path, ending: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "kafka")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=child_env(),
        text=True,
    )
    pids: list[int] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        pids = json.loads(child.stdout.readline())
        assert pids and all(_is_alive(pid) for pid in pids)
        if ending == "sigkill":
            child.kill()
        else:
            child.stdin.close()  # the child returns; only atexit is left to stop the broker
        child.wait(60)
        wait_until(lambda: not any(_is_alive(pid) for pid in pids), f"JVMs {pids} are gone")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pid in pids:  # only if the test failed: never leave them behind
            if _is_alive(pid):
                os.kill(pid, signal.SIGKILL)
    if ending == "exit-without-stop":
        assert child.returncode == 0


@pytest.mark.kills_nodes
def test_command_line_runs_until_sigterm(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "kq.local", "--nodes", "1", "--workdir", str(tmp_path / "k")],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env=child_env(),
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line.startswith("bootstrap_servers=127.0.0.1:")
        pids = _jvms_started_by(child.pid)
        assert len(pids) == 1
        brokers = AdminClient({"bootstrap.servers": line.split("=", 1)[1]}).list_topics(timeout=10)
        assert list(brokers.brokers) == [1]
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0
        assert not any(_is_alive(pid) for pid in pids)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.kills_nodes
def test_session_check_reports_a_leaked_broker(tmp_path: Path) -> None:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_leak.py").write_text(
        "from kq.local import LocalKafka\n"
        "LEAKED = []\n"
        "def test_leak():\n"
        "    LEAKED.append(LocalKafka(1).start())\n"
    )
    env = child_env()
    env.pop("KQ_TEST_BOOTSTRAP", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_leak.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "outlived the test session" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 1


# -- error messages, without breaking the machine ----------------------------------


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH folder, no KAFKA_HOME or JAVA_HOME, and an empty cache."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("KQ_CACHE_DIR", str(tmp_path / "cache"))
    return folder


def with_java(folder: Path) -> None:
    if REAL_JAVA is None:
        pytest.skip("no java on this machine")
    (folder / "java").symlink_to(REAL_JAVA)


def fake_mvn(folder: Path, body: str) -> Path:
    """A `mvn` that logs its arguments to calls.log and then runs ``body``."""
    calls = folder.parent / "calls.log"
    script = folder / "mvn"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"with open({str(calls)!r}, 'a') as log:\n"
        "    log.write(' '.join(sys.argv[1:]) + '\\n')\n"
        "libs = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('-Dkafka.libs.dir='))\n"
        f"{body}\n"
    )
    script.chmod(0o755)
    return calls


def test_missing_java_is_named(bare_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="no `java` on PATH"):
        LocalKafka().start()


def test_missing_maven_is_named(bare_path: Path) -> None:
    with_java(bare_path)
    with pytest.raises(LocalKafkaError, match="`mvn`") as failure:
        LocalKafka().start()
    assert "KAFKA_HOME" in str(failure.value)


def test_maven_failure_shows_its_output_and_suspects_the_network(bare_path: Path) -> None:
    with_java(bare_path)
    calls = fake_mvn(
        bare_path,
        "print('[ERROR] Could not transfer artifact: repo.maven.apache.org: Name resolution')\n"
        "sys.exit(1)",
    )
    with pytest.raises(LocalKafkaError, match="network") as failure:
        ensure_broker_classpath()
    assert "Could not transfer artifact" in str(failure.value)
    offline, online = calls.read_text().splitlines()
    assert " -o " in f" {offline} " and " -o " not in f" {online} "
    assert not list((bare_path.parent / "cache").rglob(".complete"))


def test_concurrent_fetches_run_maven_once(bare_path: Path) -> None:
    with_java(bare_path)
    calls = fake_mvn(
        bare_path,
        "busy = os.path.join(os.path.dirname(os.path.dirname(libs)), 'busy')\n"
        "fd = os.open(busy, os.O_CREAT | os.O_EXCL)  # fails if another fetch overlaps\n"
        "os.makedirs(libs, exist_ok=True)\n"
        f"open(os.path.join(libs, 'kafka_2.13-{KAFKA_VERSION}.jar'), 'w').close()\n"
        "os.close(fd)\n"
        "os.remove(busy)",
    )
    results: list[Path | BaseException] = []

    def fetch() -> None:
        try:
            results.append(ensure_broker_classpath())
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    libs = bare_path.parent / "cache" / f"kafka-{KAFKA_VERSION}" / "libs"
    assert results == [libs] * 4
    assert len(calls.read_text().splitlines()) == 1  # the offline attempt sufficed, once
    assert (libs / ".complete").is_file()


def test_fetched_jars_are_reused_without_maven(bare_path: Path) -> None:
    libs = bare_path.parent / "cache" / "kafka-9.9.9" / "libs"
    libs.mkdir(parents=True)
    (libs / ".complete").touch()
    assert ensure_broker_classpath("9.9.9") == libs


def test_kafka_home_wins_and_is_checked(
    bare_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "kafka_2.13-4.3.1"
    monkeypatch.setenv("KAFKA_HOME", str(home))
    with pytest.raises(LocalKafkaError, match="KAFKA_HOME="):
        ensure_broker_classpath()
    (home / "libs").mkdir(parents=True)
    (home / "libs" / "kafka_2.13-4.3.1.jar").touch()
    assert ensure_broker_classpath() == home / "libs"
