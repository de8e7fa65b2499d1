"""A real Apache Kafka (KRaft) on 127.0.0.1 for tests and local runs.

``LocalKafka(nodes)`` formats and starts 1 or 3 combined broker+controller JVMs
on free ports in a folder of their own and waits until they answer client
requests. The broker comes from ``KAFKA_HOME`` (an unpacked Apache Kafka
distribution) or, failing that, from Maven Central: ``mvn`` fetches the jars
once into ``$KQ_CACHE_DIR`` (default ``~/.cache/kq``) and they are reused
offline afterwards. Java 17+ is needed either way.

Every JVM runs under a small watchdog process that kills it as soon as the
Python process that started it is gone, even after a SIGKILL, so no broker
outlives its owner. The first single-node broker that stops cleanly leaves a
class-data-sharing archive (~50 MB) in the cache, which makes later JVMs start
about 40% faster.

``LocalKafka(..., auth=LocalAuth(...))`` starts it with SASL/SCRAM logins and
ACLs instead of an open PLAINTEXT listener (see ``LocalAuth``).

``python -m kq.local [--nodes 1|3] [--auth] [--users-file PATH]`` runs one in
the foreground until Ctrl-C.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaException

# Public API of confluent_kafka.admin, imported there without an __all__.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic

from kq._private_files import PRIVATE_UMASK, append_private, private_dir, write_private
from kq.schedule import delay_topic_prefix, forwarder_group

__all__ = [
    "KAFKA_VERSION",
    "SCRAM_MECHANISMS",
    "ExternalKafka",
    "LocalAuth",
    "LocalKafka",
    "LocalKafkaError",
    "ensure_broker_classpath",
]

KAFKA_VERSION = "4.3.1"

_LOG = logging.getLogger(__name__)
_RESOURCES = Path(__file__).resolve().parent / "_kafka"
_POM = _RESOURCES / "pom.xml"
_LOG4J2 = _RESOURCES / "log4j2.properties"
_READY = re.compile(rb"Kafka\s*Server.*started")
# Kafka's release tarballs add the log4j2 SLF4J binding, the POMs do not; its
# version must match the log4j2 that each Kafka minor release depends on.
_LOG4J_FOR_KAFKA = {"4.0": "2.24.3", "4.1": "2.24.3", "4.2": "2.25.3", "4.3": "2.25.4"}
_MAVEN_TIMEOUT = 900.0
_KILL_WAIT = 30.0
# Marks every broker JVM with the pid of the Python process that started it,
# so leftovers can be found (see _jvms_started_by).
_OWNER_PROPERTY = "-Dkq.local.owner="

# Runs as `python -c` between us and each JVM. The JVM's pid goes back on
# stdout; stdin is a pipe whose write end only we hold, so EOF on it means we
# are gone (or want the JVM dead) and the JVM is SIGKILLed. The watchdog
# exits with the JVM's status and reaps it, so its pid is never recycled
# while we may still signal it.
_WATCHDOG = """\
import os, signal, subprocess, sys, threading
jvm = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=2, stderr=2)
os.write(1, b"%d\\n" % jvm.pid)
os.close(1)
def watch():
    while os.read(0, 64):
        pass
    jvm.send_signal(signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
code = jvm.wait()
os._exit(code if code >= 0 else 128 - code)
"""

# The JVM flags of Kafka's own start scripts, minus JMX, with a smaller heap,
# plus C1 only: brokers that live for seconds to minutes start ~1/3 faster
# (3 nodes on 2 cores: 10 s -> 6.5 s) and never get hot enough for C2 to pay.
_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
# A stale or mismatched class-data archive only costs speed; keep its
# warnings out of the broker log.
_CDS_QUIET = "-Xlog:cds*=off"


class LocalKafkaError(RuntimeError):
    """A local Kafka broker could not be provided, started or stopped."""


# -- fetching the broker -------------------------------------------------------


def _find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise LocalKafkaError(
            "cannot run Apache Kafka: no `java` on PATH (and no JAVA_HOME/bin/java). "
            "Kafka 4 needs Java 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`."
        )
    return found


def _cache_dir() -> Path:
    configured = os.environ.get("KQ_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "kq"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def ensure_broker_classpath(version: str = KAFKA_VERSION) -> Path:
    """Return a folder holding the broker's jars, fetching them if needed.

    ``$KAFKA_HOME/libs`` wins when ``KAFKA_HOME`` is set (``version`` is then
    ignored). Otherwise the jars of ``version`` are fetched with ``mvn`` into
    the cache folder, once: concurrent callers wait on a file lock.
    """
    home = os.environ.get("KAFKA_HOME")
    if home:
        libs = Path(home) / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise LocalKafkaError(
                f"KAFKA_HOME={home} is not an unpacked Apache Kafka distribution: "
                f"{libs} holds no kafka_2.13-*.jar"
            )
        return libs
    cache = _cache_dir()
    libs = cache / f"kafka-{version}" / "libs"
    stamp = libs / ".complete"
    if stamp.is_file():
        return libs
    if not version.startswith("4."):
        raise LocalKafkaError(f"Kafka {version} is not supported: kq.local runs Kafka 4.x")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            f"cannot get Apache Kafka {version}: KAFKA_HOME is not set, the jars are not cached "
            f"in {libs} yet, and `mvn` (Apache Maven) is not on PATH to fetch them from Maven "
            "Central. Install Maven, or set KAFKA_HOME to an unpacked Kafka distribution."
        )
    _find_java()  # Maven needs it too, and says so less clearly
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / f"kafka-{version}.lock"):
        if not stamp.is_file():  # another process may have fetched while we waited
            _fetch_with_maven(mvn, version, cache, libs)
            stamp.touch()
    return libs


def _fetch_with_maven(mvn: str, version: str, cache: Path, libs: Path) -> None:
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(_POM),
        f"-Dmaven.repo.local={cache / 'm2'}",
        f"-Dkafka.version={version}",
        f"-Dkafka.libs.dir={libs}",
    ]
    log4j = _LOG4J_FOR_KAFKA.get(".".join(version.split(".")[:2]))
    if log4j:
        command.append(f"-Dkafka.log4j.version={log4j}")
    goal = "dependency:copy-dependencies"
    # A half-filled folder from an interrupted fetch must not linger.
    shutil.rmtree(libs, ignore_errors=True)
    output = ""
    # Offline first: a warm Maven cache needs no network at all.
    for extra in (["-o"], []):
        try:
            done = subprocess.run(
                [*command, *extra, goal],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=_MAVEN_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = (exc.output or b"").decode(errors="replace")
            raise LocalKafkaError(
                f"Maven did not fetch Apache Kafka {version} within {_MAVEN_TIMEOUT:.0f}s; "
                f"is the network to Maven Central slow or missing?\n{_tail(output, 30)}"
            ) from None
        output = done.stdout.decode(errors="replace")
        if done.returncode == 0 and (libs / f"kafka_2.13-{version}.jar").is_file():
            return
    raise LocalKafkaError(
        f"Maven could not fetch Apache Kafka {version} (org.apache.kafka:kafka_2.13) into "
        f"{libs}; the network to Maven Central may be missing, or the version may not exist. "
        f"Set KAFKA_HOME to use an unpacked distribution instead. "
        f"Last lines of `{' '.join([*command, goal])}`:\n{_tail(output, 30)}"
    )


# -- helpers -------------------------------------------------------------------


def _cds_archive_path(java: str, libs: Path) -> Path | None:
    """Where the class-data sharing archive for this java and these jars lives.

    The JVM validates an archive itself; the key only keeps one that it would
    reject (new JDK, other jars) from shadowing a usable one forever.
    """
    try:
        real_java = Path(java).resolve()
        jars = sorted((jar.name, jar.stat().st_size) for jar in libs.glob("*.jar"))
        key = repr((str(real_java), real_java.stat().st_mtime_ns, str(libs.resolve()), jars))
        folder = _cache_dir() / "cds"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.tmp"):  # left by a dump whose owner died
            if stale.stat().st_mtime < time.time() - 3600:
                stale.unlink(missing_ok=True)
    except OSError:
        return None
    return folder / f"kafka-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsa"


@functools.cache
def _has_base_cds(java: str) -> bool:
    # Without the JDK's own class archive, -XX:ArchiveClassesAtExit stops the
    # JVM from starting at all (JDK 17), rather than being ignored.
    try:
        probe = subprocess.run(
            [java, "-Xshare:on", "-version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _random_id() -> str:
    # Kafka's Uuid.randomUuid(): unpadded base64url, never starting with "-".
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not made.startswith("-"):
            return made


def _free_ports(count: int) -> list[int]:
    # All held open together so that they are distinct.
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def port_is_free(port: int) -> bool:
    """Whether a TCP port on 127.0.0.1 can be listened on now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _admin(bootstrap: str, config: Mapping[str, Any] | None = None) -> AdminClient:
    # librdkafka would print connection failures to stderr; route them to logging.
    # "logger" inside the config: the keyword argument needs confluent-kafka >= 2.4
    settings: dict[str, Any] = {**(config or {}), "bootstrap.servers": bootstrap, "logger": _LOG}
    return AdminClient(settings)


def _broker_ids(
    bootstrap: str, timeout: float, config: Mapping[str, Any] | None = None
) -> set[int]:
    metadata = _admin(bootstrap, config).list_topics(timeout=timeout)
    return {int(broker_id) for broker_id in metadata.brokers}


def _leaders_ready(
    bootstrap: str,
    topic: str,
    partitions: int,
    timeout: float,
    config: Mapping[str, Any] | None = None,
) -> bool:
    try:
        metadata = _admin(bootstrap, config).list_topics(topic=topic, timeout=timeout)
    except KafkaException:
        return False
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or len(found.partitions) != partitions:
        return False
    return all(p.error is None and p.leader >= 0 for p in found.partitions.values())


def _create_topic(
    bootstrap: str,
    check_addresses: Sequence[str],
    name: str,
    partitions: int,
    replication_factor: int | None,
    config: Mapping[str, str] | None,
    timeout: float,
    client_config: Mapping[str, Any] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    new = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=-1 if replication_factor is None else replication_factor,
        config=dict(config or {}),
    )
    admin = _admin(bootstrap, client_config)  # must outlive the futures
    futures = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)
    try:
        futures[name].result(timeout)
    except KafkaException as exc:
        raise LocalKafkaError(f"could not create topic {name!r}: {exc}") from exc
    # Every broker must know the leaders, or a client that asks the wrong one
    # first sees UNKNOWN_TOPIC_OR_PARTITION.
    for address in check_addresses:
        while not _leaders_ready(address, name, partitions, 5.0, client_config):
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"topic {name!r} has no leader for all {partitions} partitions on "
                    f"{address} within {timeout}s"
                )
            time.sleep(0.05)


def _is_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _jvms_started_by(owner_pid: int) -> list[int]:
    """Pids of live broker JVMs that the Python process ``owner_pid`` started (Linux)."""
    marker = f"{_OWNER_PROPERTY}{owner_pid}".encode()
    watchdog = _WATCHDOG.encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The watchdogs carry the JVM's command line too.
        is_jvm = marker in arguments and watchdog not in arguments
        if is_jvm and _is_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


# -- authentication ------------------------------------------------------------

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
_SCRAM_ITERATIONS = 4096  # the minimum Kafka accepts
_USER_NAME = re.compile(r"[A-Za-z0-9._-]+")
# The client listener's name when auth is on; the controller listener keeps its name.
_SASL_LISTENER = "SASL_PLAINTEXT"
_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_ACL_SETTLE = 0.5  # seconds; see LocalKafka.grant
ClientFamily = Literal["confluent", "kafka-python"]


def _check_credentials(name: str, password: str) -> None:
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
        raise ValueError(f"user name {name!r} must be letters, digits, '.', '_' or '-'")
    if not isinstance(password, str) or not password:
        raise ValueError(f"the password of {name!r} must be a non-empty str")
    # The admin's goes, double-quoted, into the broker's JAAS settings in
    # server.properties, which Java reads as ISO-8859-1; one rule for all.
    if any(char in '"\\' or not (char.isascii() and char.isprintable()) for char in password):
        raise ValueError(f"the password of {name!r} must be printable ASCII without '\"' or '\\'")


@dataclass(frozen=True, repr=False)
class LocalAuth:
    """SASL/SCRAM users and ACL enforcement for a ``LocalKafka``.

    ``admin`` is ``(name, password)`` of the super user: the broker uses it to
    talk to itself and to other nodes, and ``LocalKafka`` uses it for its
    readiness check, topics and ACLs. ``users`` maps the other user names to
    their passwords. Every user gets a credential for each of ``mechanisms``
    when the storage is formatted, so they exist before any client connects.
    Nobody but the admin may do anything until granted (``LocalKafka.grant``).
    Passwords never appear in the repr.
    """

    admin: tuple[str, str] = ("admin", "admin-secret")
    users: Mapping[str, str] = field(default_factory=dict)
    mechanisms: tuple[str, ...] = SCRAM_MECHANISMS

    def __post_init__(self) -> None:
        if not isinstance(self.admin, tuple) or len(self.admin) != 2:
            raise ValueError("admin must be a (name, password) tuple")
        _check_credentials(*self.admin)
        users = dict(self.users)
        for name, password in users.items():
            _check_credentials(name, password)
        if self.admin[0] in users:
            raise ValueError(f"{self.admin[0]!r} is the admin; do not list it in users too")
        mechanisms = tuple(self.mechanisms)
        unknown = [m for m in mechanisms if m not in SCRAM_MECHANISMS]
        if not mechanisms or unknown:
            raise ValueError(
                f"mechanisms must be one or more of {', '.join(SCRAM_MECHANISMS)}, "
                f"not {list(mechanisms)}"
            )
        object.__setattr__(self, "users", MappingProxyType(users))
        object.__setattr__(self, "mechanisms", mechanisms)

    def __repr__(self) -> str:
        return (
            f"LocalAuth(admin={self.admin[0]!r}, users={sorted(self.users)!r}, "
            f"mechanisms={self.mechanisms!r})"
        )

    @property
    def admin_name(self) -> str:
        """The super user's name."""
        return self.admin[0]

    def password(self, user: str) -> str:
        """The password of ``user`` (the admin or one of ``users``)."""
        if user == self.admin[0]:
            return self.admin[1]
        try:
            return self.users[user]
        except KeyError:
            known = ", ".join([self.admin[0], *sorted(self.users)])
            raise LocalKafkaError(f"no user {user!r}; the users are {known}") from None

    def client_config(
        self,
        user: str | None = None,
        *,
        client: ClientFamily = "confluent",
        mechanism: str | None = None,
    ) -> dict[str, str]:
        """Client settings that log in as ``user`` (default: the admin).

        confluent-kafka (librdkafka) names: ``security.protocol``,
        ``sasl.mechanism``, ``sasl.username``, ``sasl.password``; kafka-python
        names: ``security_protocol``, ``sasl_mechanism``,
        ``sasl_plain_username``, ``sasl_plain_password``. ``mechanism``
        defaults to the first of ``mechanisms``.
        """
        name = self.admin[0] if user is None else user
        password = self.password(name)
        chosen = self.mechanisms[0] if mechanism is None else mechanism
        if chosen not in self.mechanisms:
            raise LocalKafkaError(
                f"mechanism {chosen!r} is not enabled; enabled: {', '.join(self.mechanisms)}"
            )
        if client == "confluent":
            return {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": chosen,
                "sasl.username": name,
                "sasl.password": password,
            }
        if client == "kafka-python":
            return {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": chosen,
                "sasl_plain_username": name,
                "sasl_plain_password": password,
            }
        raise ValueError(f"client must be 'confluent' or 'kafka-python', not {client!r}")

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create every credential.

        The passwords are salted and hashed here, as Kafka would, so the plain
        passwords are not handed to the tool (``LocalKafka`` passes these in
        a private ``@file``, as the salted form lets its holder log in too).
        """
        arguments: list[str] = []
        for name, password in [self.admin, *sorted(self.users.items())]:
            for mechanism in self.mechanisms:
                salt = os.urandom(16)
                salted = hashlib.pbkdf2_hmac(
                    _SCRAM_HASHES[mechanism], password.encode(), salt, _SCRAM_ITERATIONS
                )
                arguments += [
                    "--add-scram",
                    f"{mechanism}=[name={name},iterations={_SCRAM_ITERATIONS},"
                    f'salt="{base64.b64encode(salt).decode()}",'
                    f'saltedpassword="{base64.b64encode(salted).decode()}"]',
                ]
        return arguments

    def server_properties(self) -> dict[str, str]:
        """The broker settings: SCRAM on the client listener, PLAIN on the controller listener.

        Clients and brokers (inter-broker traffic) use SCRAM on the
        ``SASL_PLAINTEXT`` listener. The controller listener cannot use SCRAM
        (its credentials live in the metadata that the controllers serve), so
        it uses SASL/PLAIN with the admin's name and password, defined in the
        broker's own settings: no listener accepts unauthenticated clients.
        """
        name, password = self.admin
        scram_login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{name}" password="{password}";'
        )
        plain_login = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{name}" password="{password}" user_{name}="{password}";'
        )
        listener = _SASL_LISTENER.lower()
        properties = {
            "listener.security.protocol.map": (
                f"CONTROLLER:SASL_PLAINTEXT,{_SASL_LISTENER}:SASL_PLAINTEXT"
            ),
            "inter.broker.listener.name": _SASL_LISTENER,
            "sasl.enabled.mechanisms": ",".join(self.mechanisms),
            "sasl.mechanism.inter.broker.protocol": self.mechanisms[0],
            f"listener.name.{listener}.sasl.enabled.mechanisms": ",".join(self.mechanisms),
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain_login,
            "authorizer.class.name": _AUTHORIZER,
            "super.users": f"User:{name}",
            "allow.everyone.if.no.acl.found": "false",
        }
        for mechanism in self.mechanisms:
            key = f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config"
            properties[key] = scram_login
        return properties


def _principal(principal: str) -> str:
    # "alice" -> "User:alice"; "User:alice" (or any "Type:name") as given.
    return principal if ":" in principal else f"User:{principal}"


def _acl_operations(operations: str | Sequence[str]) -> list[AclOperation]:
    names = [operations] if isinstance(operations, str) else list(operations)
    if not names:
        raise ValueError("give at least one operation, e.g. ['WRITE', 'DESCRIBE']")
    found = []
    for name in names:
        try:
            found.append(AclOperation[str(name).upper()])
        except KeyError:
            valid = ", ".join(op.name for op in AclOperation if op.name not in ("UNKNOWN", "ANY"))
            raise ValueError(f"unknown ACL operation {name!r}; use one of {valid}") from None
    return found


# -- the cluster ---------------------------------------------------------------


@dataclass
class _Node:
    node_id: int
    port: int
    controller_port: int
    home: Path
    watchdog: subprocess.Popen[bytes] | None = None
    jvm_pid: int | None = None
    control_fd: int | None = None
    log_start: int = 0  # log size when the current JVM was launched
    cds_dump: Path | None = None  # where the current JVM writes its class archive at exit

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    def running(self) -> bool:
        return self.watchdog is not None and self.watchdog.poll() is None


# Started instances, stopped at exit; strong references so that an instance
# dropped without stop() is still stopped.
_LIVE: set[LocalKafka] = set()


class LocalKafka:
    """1 or more Kafka nodes (broker and controller in one JVM) on 127.0.0.1.

    Ports are chosen by ``start()`` for all nodes at once, so a restarted node
    comes back on the same address. Without ``workdir`` the data lives in a temporary
    folder that ``stop()`` removes; a given ``workdir`` is kept, and data that
    is already formatted in it is reused. ``broker_config`` entries override the
    generated ``server.properties`` of every node.

    With ``auth=LocalAuth(...)`` the client listener takes only SASL/SCRAM logins
    (``SASL_PLAINTEXT``), the users' credentials are created when the storage is
    formatted, and ACLs are enforced (``StandardAuthorizer``, nothing allowed
    without an ACL, the admin a super user): see ``client_config`` and ``grant``.
    Users are created only by the first format: a ``workdir`` formatted before
    keeps the users it was formatted with.
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        version: str = KAFKA_VERSION,
        workdir: str | Path | None = None,
        startup_timeout: float = 60.0,
        heap: str = "512m",
        broker_config: Mapping[str, str] | None = None,
        auth: LocalAuth | None = None,
        port: int | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be at least 1, not {nodes}")
        if auth is not None and not isinstance(auth, LocalAuth):
            raise TypeError(f"auth must be a kq.local.LocalAuth or None, not {auth!r}")
        self._auth = auth
        self._count = nodes
        self._version = version
        self._workdir = Path(workdir).resolve() if workdir is not None else None
        self._startup_timeout = startup_timeout
        self._heap = heap
        self._broker_config = dict(broker_config or {})
        self._nodes: dict[int, _Node] = {}
        self._root: Path | None = None
        self._owns_root = False
        self._java = ""
        self._libs: Path | None = None
        self._cds: Path | None = None
        self._owner_pid = os.getpid()
        self._port = port  # node 1's client port (None: any free port)

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self._nodes else "not started"
        secured = ", SASL/SCRAM + ACLs" if self._auth is not None else ""
        return f"LocalKafka(nodes={self._count}, {where}{secured})"

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- public API ------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:port`` of every node's client listener."""
        return ",".join(node.address for node in self._started_nodes())

    @property
    def node_ids(self) -> list[int]:
        """The node ids, ``[1, ..., nodes]``."""
        return list(range(1, self._count + 1))

    def node_address(self, node_id: int) -> str:
        """``127.0.0.1:port`` of one node's client listener."""
        return self._node(node_id).address

    @property
    def auth(self) -> LocalAuth | None:
        """The users and mechanisms when started with ``auth``, else None."""
        return self._auth

    def client_config(
        self,
        user: str | None = None,
        *,
        client: ClientFamily = "confluent",
        mechanism: str | None = None,
    ) -> dict[str, str]:
        """Client settings to log in as ``user`` (default: the admin); see ``LocalAuth``.

        Merge them into a client's configuration, e.g.
        ``Queue.connect(bootstrap, topic, producer_config=kafka.client_config("alice"))``
        or, for kafka-python, ``client_config("alice", client="kafka-python")``.
        Without ``auth``: ``{}`` for ``user=None`` (nothing is needed).
        """
        if self._auth is None:
            if user is None:
                return {}
            raise LocalKafkaError(f"no user {user!r}: this LocalKafka runs without auth")
        return self._auth.client_config(user, client=client, mechanism=mechanism)

    def admin_client(self) -> AdminClient:
        """A confluent-kafka ``AdminClient`` for the running nodes, logged in as the admin."""
        return _admin(self._running_bootstrap("make an admin client"), self.client_config())

    def grant(
        self,
        principal: str,
        operations: str | Sequence[str],
        *,
        topic: str | None = None,
        group: str | None = None,
        cluster: bool = False,
        prefixed: bool = False,
        deny: bool = False,
        host: str = "*",
        timeout: float = 30.0,
    ) -> None:
        """Add an ACL and return once every running node enforces it.

        ``principal`` is ``"User:alice"`` (or just ``"alice"``); ``operations``
        are Kafka's ACL operation names (``READ``, ``WRITE``, ``DESCRIBE``,
        ``CREATE``, ``ALL``, ...). Name exactly one resource: ``topic``,
        ``group`` (a consumer group) or ``cluster=True``; ``prefixed=True``
        matches every topic or group whose name starts with the given one.
        ``deny=True`` adds a DENY rule, which wins over any ALLOW.

        On a single node the new ACL is enforced when this returns. With several
        nodes each one is asked (through its own address) and then given half
        a second more, since the client may route the question to another node.
        """
        self._require_auth("grant ACLs")
        resources = [
            (kind, name)
            for kind, name in (
                (ResourceType.TOPIC, topic),
                (ResourceType.GROUP, group),
                (ResourceType.BROKER, "kafka-cluster" if cluster else None),
            )
            if name is not None
        ]
        if len(resources) != 1:
            raise ValueError("name exactly one of topic=..., group=... or cluster=True")
        kind, name = resources[0]
        pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
        if kind is ResourceType.BROKER and prefixed:
            raise ValueError("prefixed=True applies to topics and groups only")
        bindings = [
            AclBinding(
                kind,
                name,
                pattern,
                _principal(principal),
                host,
                operation,
                AclPermissionType.DENY if deny else AclPermissionType.ALLOW,
            )
            for operation in _acl_operations(operations)
        ]
        bootstrap = self._running_bootstrap("grant ACLs")
        config = self.client_config()
        admin = _admin(bootstrap, config)  # must outlive the futures
        futures = admin.create_acls(bindings, request_timeout=timeout)
        for binding, future in futures.items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                raise LocalKafkaError(f"could not create ACL {binding}: {exc}") from exc
        # The controller has committed the ACLs; each broker's authorizer applies
        # them once it has caught up with the metadata log. A broker answers
        # DescribeAcls from its own authorizer, so ask through each node.
        deadline = time.monotonic() + timeout
        running = [node for node in self._started_nodes() if node.running()]
        for node in running:
            self._wait_acls(node, bindings, deadline)
        if len(running) > 1:
            # librdkafka may route a request to any node it has learned of, not
            # only the one it was bootstrapped with; give a lagging node (they
            # trail the controller by milliseconds) a moment to catch up.
            time.sleep(_ACL_SETTLE)

    def grant_producer(
        self,
        principal: str,
        topic: str,
        *,
        prefixed: bool = False,
        delay: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Let ``principal`` write to ``topic``: ``WRITE`` and ``DESCRIBE`` (kafka-acls --producer).

        Idempotent producers (kq's default with confluent-kafka) need nothing more
        since Kafka 3.0 (KIP-679: ``WRITE`` on a topic implies ``IDEMPOTENT_WRITE``).
        ``delay=True`` adds what ``using(delay=/eta=)`` needs: ``CREATE``,
        ``WRITE`` and ``DESCRIBE`` on the delay tiers (prefix ``<topic>.kq-delay-``)
        and nothing else: not the dead-letter topic ``<topic>.kq-dead``.
        """
        operations = ["WRITE", "DESCRIBE"]
        self.grant(principal, operations, topic=topic, prefixed=prefixed, timeout=timeout)
        if delay:
            tiers = delay_topic_prefix(topic)
            self.grant(
                principal, ["CREATE", *operations], topic=tiers, prefixed=True, timeout=timeout
            )

    def grant_worker(
        self, principal: str, topic: str, group: str, *, timeout: float = 30.0
    ) -> None:
        """Let ``principal`` run a kq worker of ``topic`` in ``group``, retries and delays included.

        ``READ``, ``WRITE`` (due retries come home) and ``DESCRIBE`` on the
        topic; ``READ``, ``WRITE``, ``DESCRIBE`` and ``CREATE`` on the prefix
        ``<topic>.kq-`` (delay tiers and dead letters); ``READ`` on the group
        and on the delay forwarders' group ``<topic>.kq-delay`` (shared by every
        worker group of the topic).
        """
        self.grant(principal, ["READ", "WRITE", "DESCRIBE"], topic=topic, timeout=timeout)
        self.grant(
            principal,
            ["READ", "WRITE", "DESCRIBE", "CREATE"],
            topic=f"{topic}.kq-",
            prefixed=True,
            timeout=timeout,
        )
        self.grant(principal, "READ", group=group, timeout=timeout)
        self.grant(principal, "READ", group=forwarder_group(topic), timeout=timeout)

    def grant_consumer(
        self,
        principal: str,
        topic: str,
        group: str,
        *,
        prefixed: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Let ``principal`` consume ``topic`` in ``group``, like kafka-acls --consumer.

        ``READ`` and ``DESCRIBE`` on the topic, ``READ`` on the group (to join
        it and commit offsets). ``prefixed`` applies to the topic and the group.
        """
        self.grant(principal, ["READ", "DESCRIBE"], topic=topic, prefixed=prefixed, timeout=timeout)
        self.grant(principal, ["READ"], group=group, prefixed=prefixed, timeout=timeout)

    def start(self) -> LocalKafka:
        """Format (first time only) and start every node; wait until all answer."""
        if self._nodes:
            return self
        self._owner_pid = os.getpid()
        try:
            self._java = _find_java()
            self._libs = ensure_broker_classpath(self._version)
            self._cds = _cds_archive_path(self._java, self._libs)
            self._prepare()
            _LIVE.add(self)
            self._format()
            deadline = time.monotonic() + self._startup_timeout
            for node in self._nodes.values():
                self._launch(node)
            self._wait_ready(list(self._nodes.values()), set(self.node_ids), deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Stop one node with SIGTERM (clean shutdown); SIGKILL it after ``timeout``.

        A clean shutdown can stall when the node cannot reach a controller
        quorum, hence the escalation.
        """
        node = self._node(node_id)
        if node.running():
            self._signal(node, signal.SIGTERM)
            if not self._wait_exit(node, timeout):
                self._signal(node, signal.SIGKILL)
                self._wait_exit(node, _KILL_WAIT, required=True)
        self._release(node)

    def kill_node(self, node_id: int) -> None:
        """Kill one node at once with SIGKILL."""
        node = self._node(node_id)
        if node.running():
            self._signal(node, signal.SIGKILL)
            self._wait_exit(node, _KILL_WAIT, required=True)
        self._release(node)

    def start_node(self, node_id: int) -> None:
        """Restart a stopped or killed node on its existing data; wait until it answers."""
        node = self._node(node_id)
        if node.running():
            return
        self._release(node)
        deadline = time.monotonic() + self._startup_timeout
        try:
            self._launch(node)
            self._wait_ready([node], {node_id}, deadline)
        except BaseException:
            self.kill_node(node_id)  # a half-started node must not linger
            raise

    def is_running(self, node_id: int) -> bool:
        """Whether the node's JVM is alive (it may still be starting)."""
        return self._node(node_id).running()

    def pids(self) -> list[int]:
        """Process ids of the running broker JVMs."""
        return [
            node.jvm_pid
            for node in self._nodes.values()
            if node.jvm_pid is not None and node.running()
        ]

    def stop(self) -> None:
        """Stop every node and remove the temporary workdir, if one was made.

        Nodes whose data is thrown away anyway are SIGKILLed; with a given
        ``workdir`` they get SIGTERM first, as in ``stop_node``.
        """
        if self._owner_pid != os.getpid():
            return  # a forked child must not stop its parent's brokers
        nodes = list(self._nodes.values())
        running = [node for node in nodes if node.running()]
        for node in running:
            # A JVM writes its class archive only on a clean exit.
            graceful = not self._owns_root or node.cds_dump is not None
            self._signal(node, signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = time.monotonic() + 30.0
        for node in running:
            if not self._wait_exit(node, max(0.0, deadline - time.monotonic())):
                self._signal(node, signal.SIGKILL)
        for node in running:
            self._wait_exit(node, _KILL_WAIT, required=True)
        for node in nodes:
            self._release(node)
        self._nodes = {}
        _LIVE.discard(self)
        if self._owns_root and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._owns_root = False

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic; return once every running node knows a leader for each partition.

        ``replication_factor=None`` uses the broker default (``min(nodes, 3)``).
        """
        nodes = [node for node in self._started_nodes() if node.running()]
        if not nodes:
            raise LocalKafkaError(f"cannot create topic {name!r}: no node is running")
        _create_topic(
            ",".join(node.address for node in nodes),
            [node.address for node in nodes],
            name,
            partitions,
            replication_factor,
            config,
            timeout,
            self.client_config(),
        )

    def log_tail(self, node_id: int, lines: int = 50) -> str:
        """The last ``lines`` lines of the node's broker log (all its runs)."""
        path = self._node(node_id).log_path
        try:
            with open(path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 256 * lines))
                text = handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return _tail(text, lines)

    # -- internals -------------------------------------------------------------

    def _node(self, node_id: int) -> _Node:
        nodes = self._started_nodes()
        if node_id not in self._nodes:
            known = ", ".join(str(node.node_id) for node in nodes)
            raise LocalKafkaError(f"no node {node_id}; the nodes are {known}")
        return self._nodes[node_id]

    def _started_nodes(self) -> list[_Node]:
        if not self._nodes:
            raise LocalKafkaError("this LocalKafka is not started; call start() first")
        return list(self._nodes.values())

    def _running_bootstrap(self, purpose: str) -> str:
        nodes = [node for node in self._started_nodes() if node.running()]
        if not nodes:
            raise LocalKafkaError(f"cannot {purpose}: no node is running")
        return ",".join(node.address for node in nodes)

    def _require_auth(self, purpose: str) -> LocalAuth:
        if self._auth is None:
            raise LocalKafkaError(
                f"cannot {purpose}: this LocalKafka was started without auth=LocalAuth(...)"
            )
        return self._auth

    def _wait_acls(self, node: _Node, bindings: list[AclBinding], deadline: float) -> None:
        # DescribeAcls is answered by the node's own authorizer.
        admin = _admin(node.address, self.client_config())
        wanted = set(bindings)
        while True:
            found: set[AclBinding] = set()
            with contextlib.suppress(KafkaException):
                seen = admin.describe_acls(
                    AclBindingFilter(
                        bindings[0].restype,
                        bindings[0].name,
                        bindings[0].resource_pattern_type,
                        bindings[0].principal,
                        bindings[0].host,
                        AclOperation.ANY,
                        bindings[0].permission_type,
                    ),
                    request_timeout=5.0,
                ).result(5.0)
                found = set(seen)
            if wanted <= found:
                return
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"node {node.node_id} does not enforce the new ACLs {bindings} in time"
                )
            time.sleep(0.05)

    def _prepare(self) -> None:
        if self._workdir is None:
            self._root = Path(tempfile.mkdtemp(prefix="kq-kafka-"))  # 0700
            self._owns_root = True
        else:
            self._root = self._workdir
            if not self._root.exists():
                private_dir(self._root)  # a folder the caller already had keeps its mode
        ports = _free_ports(2 * self._count)
        if self._port is not None:
            if not port_is_free(self._port):
                raise LocalKafkaError(
                    f"port {self._port} on 127.0.0.1 is in use (another Kafka?): stop it,"
                    " or choose another port"
                )
            ports[0] = self._port
        for node_id in self.node_ids:
            # Private: server.properties holds the admin's password, the data
            # the users' SCRAM keys (a salted key lets its holder log in).
            home = private_dir(self._root / f"node-{node_id}")
            self._nodes[node_id] = _Node(
                node_id, ports[2 * node_id - 2], ports[2 * node_id - 1], home
            )
        for node in self._nodes.values():
            lines = [f"{key}={value}" for key, value in self._server_properties(node).items()]
            write_private(node.config_path, "\n".join(lines) + "\n")
            private_dir(node.data_dir)

    def _server_properties(self, node: _Node) -> dict[str, str]:
        replicas = str(min(self._count, 3))
        min_isr = "2" if self._count >= 3 else "1"
        voters = ",".join(
            f"{other.node_id}@127.0.0.1:{other.controller_port}" for other in self._nodes.values()
        )
        client_listener = "PLAINTEXT" if self._auth is None else _SASL_LISTENER
        listeners = (
            f"{client_listener}://{node.address},CONTROLLER://127.0.0.1:{node.controller_port}"
        )
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            # A static quorum: plain `format` works, and no node needs --standalone.
            "controller.quorum.voters": voters,
            "listeners": listeners,
            "advertised.listeners": listeners,
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": str(self._count),
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            # Two cores and a handful of clients need few threads.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": str(self._count),
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created on purpose (kq topic create), never by a typo
            # in a producer's or consumer's topic name.
            "auto.create.topics.enable": "false",
            # A killed node is fenced (and leaves the ISR) after this, and its
            # restart may wait for it to re-register: keep both short.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            # The default 128 MiB is allocated at startup, per node.
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        }
        if self._auth is not None:
            properties.update(self._auth.server_properties())
        properties.update(self._broker_config)
        return properties

    def _format(self) -> None:
        assert self._libs is not None
        pending = [n for n in self._nodes.values() if not (n.data_dir / "meta.properties").exists()]
        if not pending:
            return
        with self._scram_arguments() as scram:
            cluster_id = _random_id()
            processes = [
                (
                    node,
                    subprocess.Popen(
                        [
                            self._java,
                            "-Xmx256m",
                            # A one-shot tool: a quick JIT starts faster.
                            "-XX:TieredStopAtLevel=1",
                            "-XX:+UseSerialGC",
                            *self._cds_flags(None),
                            f"-Dlog4j2.configurationFile={_LOG4J2}",
                            "-cp",
                            f"{self._libs}/*",
                            "kafka.tools.StorageTool",
                            "format",
                            "-t",
                            cluster_id,
                            "-c",
                            str(node.config_path),
                            *scram,
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        umask=PRIVATE_UMASK,
                    ),
                )
                for node in pending
            ]
            deadline = time.monotonic() + self._startup_timeout
            failure = ""
            for node, process in processes:
                try:
                    output, _ = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    output, _ = process.communicate()
                    failure = failure or f"formatting node {node.node_id} timed out"
                if process.returncode and not failure:
                    failure = (
                        f"formatting node {node.node_id} failed (exit {process.returncode}):\n"
                        + _tail(output.decode(errors="replace"), 30)
                    )
        if failure:
            raise LocalKafkaError(failure)

    @contextlib.contextmanager
    def _scram_arguments(self) -> Iterator[list[str]]:
        # The same credentials (and salts) for every node, in a file that only
        # we can read (argparse4j's @file), not on a command line anyone can
        # see: a salted SCRAM password lets its holder log in too.
        if self._auth is None:
            yield []
            return
        assert self._root is not None
        path = self._root / f"scram-{uuid.uuid4().hex}.args"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write("\n".join(self._auth.scram_arguments()) + "\n")
            yield [f"@{path}"]
        finally:
            path.unlink(missing_ok=True)

    def _launch(self, node: _Node) -> None:
        assert self._libs is not None
        command = [
            self._java,
            f"-Xmx{self._heap}",
            *_JVM_FLAGS,
            *self._cds_flags(node),
            f"-Dlog4j2.configurationFile={_LOG4J2}",
            f"-Dkafka.logs.dir={node.home / 'logs'}",
            f"{_OWNER_PROPERTY}{os.getpid()}",
            "-cp",
            f"{self._libs}/*",
            "kafka.Kafka",
            str(node.config_path),
        ]
        read_end, write_end = os.pipe()
        try:
            with append_private(node.log_path) as log:
                node.log_start = log.tell()
                watchdog = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _WATCHDOG, *command],
                    stdin=read_end,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    cwd=node.home,
                    # Out of our process group: a terminal's Ctrl-C is ours to
                    # handle, not the brokers'.
                    start_new_session=True,
                    umask=PRIVATE_UMASK,  # the broker's files: others may not read them
                )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        node.watchdog = watchdog
        node.control_fd = write_end
        assert watchdog.stdout is not None
        with watchdog.stdout:
            line = watchdog.stdout.readline().strip()
        if not line.isdigit():
            self._release(node)
            self._wait_exit(node, _KILL_WAIT)
            raise LocalKafkaError(
                f"could not launch node {node.node_id} ({self._java}):\n"
                f"{self.log_tail(node.node_id)}"
            )
        node.jvm_pid = int(line)

    def _wait_ready(self, nodes: list[_Node], broker_ids: set[int], deadline: float) -> None:
        pending = list(nodes)
        while pending:
            for node in list(pending):
                if not node.running():
                    code = node.watchdog.returncode if node.watchdog else None
                    self._release(node)
                    raise LocalKafkaError(
                        f"Kafka node {node.node_id} exited with status {code} while starting; "
                        f"the end of its log:\n{self.log_tail(node.node_id)}"
                    )
                if self._answers(node, broker_ids, deadline):
                    pending.remove(node)
            if not pending:
                return
            if time.monotonic() > deadline:
                details = "\n".join(
                    f"--- the end of node {node.node_id}'s log:\n{self.log_tail(node.node_id)}"
                    for node in pending
                )
                names = ", ".join(str(node.node_id) for node in pending)
                raise LocalKafkaError(
                    f"Kafka node(s) {names} not ready within {self._startup_timeout}s\n{details}"
                )
            time.sleep(0.1)

    def _answers(self, node: _Node, broker_ids: set[int], deadline: float) -> bool:
        # The log line says the broker thinks it is up; a metadata request
        # proves it serves clients and sees every broker it should.
        with open(node.log_path, "rb") as log:
            log.seek(node.log_start)
            if not _READY.search(log.read()):
                return False
        try:
            timeout = min(5.0, max(0.5, deadline - time.monotonic()))
            return broker_ids <= _broker_ids(node.address, timeout, self.client_config())
        except KafkaException:
            return False

    def _signal(self, node: _Node, signum: int) -> None:
        # Only while the watchdog lives: it has not reaped the JVM, so the
        # pid cannot belong to another process yet.
        if node.jvm_pid is not None and node.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.jvm_pid, signum)

    def _wait_exit(self, node: _Node, timeout: float, *, required: bool = False) -> bool:
        if node.watchdog is None:
            return True
        try:
            node.watchdog.wait(timeout)
        except subprocess.TimeoutExpired:
            if required:
                raise LocalKafkaError(
                    f"Kafka node {node.node_id} (pid {node.jvm_pid}) did not exit"
                ) from None
            return False
        return True

    def _cds_flags(self, node: _Node | None) -> list[str]:
        # Class-data sharing: with an archive of the broker's classes a JVM
        # starts ~40% faster. The first single-node broker without one writes
        # it when it stops cleanly; any broker after that uses it.
        archive = self._cds
        if archive is None:
            return []
        if archive.is_file():
            return [_CDS_QUIET, f"-XX:SharedArchiveFile={archive}"]
        if node is None or self._count != 1 or not _has_base_cds(self._java):
            return []  # a cluster's nodes may stall on SIGTERM, so never wait for a dump
        node.cds_dump = archive.with_name(f"{archive.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        return [_CDS_QUIET, f"-XX:ArchiveClassesAtExit={node.cds_dump}"]

    def _release(self, node: _Node) -> None:
        if node.control_fd is not None:
            # Closing it tells the watchdog to kill the JVM, should it still run.
            os.close(node.control_fd)
            node.control_fd = None
        if node.watchdog is not None and not node.running():
            dump, node.cds_dump = node.cds_dump, None
            if dump is not None:
                # 143: exited on SIGTERM after running its shutdown hooks.
                if node.watchdog.returncode in (0, 143) and self._cds is not None:
                    with contextlib.suppress(OSError):
                        os.replace(dump, self._cds)
                dump.unlink(missing_ok=True)
            node.watchdog = None
            node.jvm_pid = None


class ExternalKafka:
    """An already running Kafka cluster, with the ``create_topic`` of ``LocalKafka``."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers

    def __repr__(self) -> str:
        return f"ExternalKafka({self._bootstrap_servers!r})"

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap servers given."""
        return self._bootstrap_servers

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int | None = None,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic and wait until the cluster reports a leader for each partition."""
        _create_topic(
            self._bootstrap_servers,
            [self._bootstrap_servers],
            name,
            partitions,
            replication_factor,
            config,
            timeout,
        )


# -- process lifetime ----------------------------------------------------------


@atexit.register
def _stop_all() -> None:
    for kafka in list(_LIVE):
        try:
            kafka.stop()
        except Exception:  # the others must still be stopped
            _LOG.exception("could not stop %r", kafka)


def _after_fork_in_child() -> None:
    # A forked child must not keep the watchdogs' pipes open: they would then
    # outlive us, and so would the JVMs.
    for kafka in _LIVE:
        for node in kafka._nodes.values():
            if node.control_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(node.control_fd)
                node.control_fd = None
    _LIVE.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- command line --------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kq.local``: the same command as ``kq local-kafka`` (``-h`` for its options)."""
    import click

    from kq._cli_local import local_kafka

    try:
        code = local_kafka.main(
            args=list(argv) if argv is not None else None,
            prog_name="python -m kq.local",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
