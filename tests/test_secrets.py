"""Secrets stay out of visible places: command lines, error messages, readable files.

Every process kq starts (the local broker's JVMs and storage tool, the
worker supervisor's children) is looked at through ``/proc/PID/cmdline``,
as another user of the machine would; files that hold secrets must be private
from their creation, not after a ``chmod``.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_procs import Processes, kq
from kafka_checks import group_name

import kq.local as local_module
from kq._local_users import credentials
from kq.local import LocalAuth, LocalKafka, _jvms_started_by

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "adm1n-Pw-zq7"
USER_PASSWORD = "us3r-Pw-zq7"
SASL_PASSWORD = "sasl-Pw-zq7"
SIGNING_SECRET = "signing-Pw-zq7-0123456789"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    processes = Processes(tmp_path)
    yield processes
    processes.close()


# -- the local broker ----------------------------------------------------------


def test_local_broker_files_are_private_from_creation_and_no_command_line_holds_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With umask 0 and every chmod made a no-op, only modes given at creation count."""
    started: list[list[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(args: Any, *rest: Any, **kwargs: Any) -> Any:
        started.append([str(a) for a in args])
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(local_module.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)
    monkeypatch.setattr(os, "fchmod", lambda *a, **k: None)
    workdir = tmp_path / "kafka"
    auth = LocalAuth(admin=("root", ADMIN_PASSWORD), users={"app": USER_PASSWORD})
    old_umask = os.umask(0)
    try:
        kafka = LocalKafka(1, workdir=workdir, auth=auth).start()
    finally:
        os.umask(old_umask)
    try:
        secrets = (ADMIN_PASSWORD, USER_PASSWORD)
        pids = kafka.pids()
        assert pids
        for pid in pids:
            assert not any(s in _cmdline(pid) for s in secrets), "a password in the JVM's cmdline"
        watchdogs = [node.watchdog.pid for node in kafka._nodes.values() if node.watchdog]
        for pid in watchdogs:
            assert not any(s in _cmdline(pid) for s in secrets)
        assert started and not any(s in " ".join(argv) for argv in started for s in secrets)
        assert any("StorageTool" in " ".join(argv) for argv in started)

        assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
        home = workdir / "node-1"
        for path in [home, *home.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert mode & 0o077 == 0, f"{path} is {mode:04o}: other users may read it"
        assert stat.S_IMODE((home / "server.properties").stat().st_mode) == 0o600
        assert ADMIN_PASSWORD in (home / "server.properties").read_text()  # it is the one place
        log = (home / "kafka.log").read_text(errors="replace")
        assert not any(s in log for s in secrets), "a password in the broker's log"
    finally:
        kafka.stop()


def test_an_existing_node_folder_and_properties_file_are_made_private(tmp_path: Path) -> None:
    from kq._private_files import private_dir, write_private

    folder = tmp_path / "node"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert stat.S_IMODE(private_dir(folder).stat().st_mode) == 0o700
    existing = folder / "server.properties"
    existing.write_text("old")
    existing.chmod(0o644)
    write_private(existing, "new")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600 and existing.read_text() == "new"


def _credentials(
    users_file: str | None = None, admin: str | None = None, user: list[str] | None = None
) -> tuple[tuple[str, str], dict[str, str]]:
    return credentials(users_file, admin, user or [], "python -m kq.local")


def test_local_users_come_from_a_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    users = _private_file(
        tmp_path / "users", f"# users\nroot={ADMIN_PASSWORD}\napp={USER_PASSWORD}\n"
    )
    assert _credentials(users_file=str(users), admin="root") == (
        ("root", ADMIN_PASSWORD),
        {"app": USER_PASSWORD},
    )
    assert capsys.readouterr().err == ""
    # without --admin the default admin stays, unless the file names "admin"
    assert _credentials(users_file=str(users))[0] == (
        "admin",
        "admin-secret",
    )
    with pytest.raises(ValueError, match="no password for 'boss'"):
        _credentials(users_file=str(users), admin="boss")

    users.chmod(0o644)
    with pytest.raises(ValueError, match="can be read or changed by other users") as readable:
        _credentials(users_file=str(users))
    assert ADMIN_PASSWORD not in str(readable.value)
    malformed = _private_file(tmp_path / "bad", f"app={USER_PASSWORD}\n{ADMIN_PASSWORD}\n")
    with pytest.raises(ValueError, match="line 2 is not NAME=PASSWORD") as bad:
        _credentials(users_file=str(malformed))
    assert ADMIN_PASSWORD not in str(bad.value) and USER_PASSWORD not in str(bad.value)

    # the command line still works, and says who can read it
    assert _credentials(user=[f"app={USER_PASSWORD}"])[1] == {"app": USER_PASSWORD}
    assert "can be read by every user of this machine" in capsys.readouterr().err
    assert local_module.main(["--users-file", str(users)]) == 2  # 0644: refused before any start
    assert "chmod 600" in capsys.readouterr().err


@pytest.mark.kills_nodes
def test_local_kafka_command_takes_passwords_from_a_file(tmp_path: Path) -> None:
    users = _private_file(tmp_path / "users", f"admin={ADMIN_PASSWORD}\napp={USER_PASSWORD}\n")
    child = subprocess.Popen(
        [sys.executable, "-m", "kq.local", "--workdir", str(tmp_path / "k")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KQ_LOCAL_USERS_FILE": str(users)},
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("bootstrap_servers=127.0.0.1:")
        assert "SASL/SCRAM on" in child.stdout.readline()
        pids = [child.pid, *_jvms_started_by(child.pid)]
        assert len(pids) == 2
        for pid in pids:
            line = _cmdline(pid)
            assert ADMIN_PASSWORD not in line and USER_PASSWORD not in line, line
        child.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0
        assert child.stderr is not None and "warning" not in child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# -- the kq command ----------------------------------------------------------------


def test_client_config_file_with_a_secret_must_be_private(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    config = _private_file(
        tmp_path / "client.properties",
        f"# login\nsasl.username=app\nsasl.password={SASL_PASSWORD}\n",
        mode=0o640,
    )
    refused = kq("info", topic, "-b", bootstrap, "--client-config-file", str(config))
    assert refused.returncode == 2
    assert "holds sasl.password and other users can read it (mode 0640); chmod 600" in (
        refused.stderr
    )
    assert SASL_PASSWORD not in refused.stderr + refused.stdout

    config.chmod(0o600)
    fine = kq("info", topic, "-b", bootstrap, env={"KQ_CLIENT_CONFIG_FILE": str(config)})
    assert fine.returncode == 0, fine.stderr
    assert "warning" not in fine.stderr

    harmless = _private_file(tmp_path / "harmless", "client.id=kq-test\n", mode=0o644)
    assert kq("info", topic, "-b", bootstrap, "--client-config-file", str(harmless)).returncode == 0
    harmless.chmod(0o666)
    writable = kq("info", topic, "-b", bootstrap, "--client-config-file", str(harmless))
    assert writable.returncode == 2 and "writable by other users" in writable.stderr


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"sasl.username=app\nsasl.password {SASL_PASSWORD}\n", "line 2 has no '='"),
        (f"sasl password={SASL_PASSWORD}\n", "line 1 has no setting name before '='"),
        (f"{SASL_PASSWORD}\n", "line 1 has no '='"),
    ],
)
def test_malformed_client_config_lines_are_named_not_echoed(
    bootstrap: str, topic: str, tmp_path: Path, text: str, why: str
) -> None:
    config = _private_file(tmp_path / "client.properties", text)
    done = kq("info", topic, "-b", bootstrap, "--client-config-file", str(config))
    assert done.returncode == 2 and why in done.stderr
    assert SASL_PASSWORD not in done.stderr + done.stdout
    pair = kq("info", topic, "-b", bootstrap, "-X", f"sasl.password:{SASL_PASSWORD}")
    assert pair.returncode == 2 and "pair 1 has no '='" in pair.stderr
    assert SASL_PASSWORD not in pair.stderr


def test_secrets_on_the_command_line_work_with_a_warning(bootstrap: str, topic: str) -> None:
    visible = kq("info", topic, "-b", bootstrap, "-X", f"sasl.password={SASL_PASSWORD}")
    assert visible.returncode == 0, visible.stderr
    assert "kq info: warning: -X sasl.password on the command line can be read by every" in (
        visible.stderr
    )
    assert SASL_PASSWORD not in visible.stderr
    quiet = kq(
        "info", topic, "-b", bootstrap, env={"KQ_CLIENT_CONFIG": f"sasl.password={SASL_PASSWORD}"}
    )
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
    plain = kq("info", topic, "-b", bootstrap, "-X", "client.id=visible-is-fine")
    assert plain.returncode == 0 and "warning" not in plain.stderr


def test_worker_children_get_no_secret_on_their_command_line(
    bootstrap: str, topic: str, tmp_path: Path, procs: Processes
) -> None:
    config = _private_file(tmp_path / "client.properties", f"sasl.password={SASL_PASSWORD}\n")
    supervisor = procs.start(
        "worker", topic, "-b", bootstrap, "-g", group_name(), "--processes", "2",
        "--client-config-file", str(config), name="worker",
        env={"KQ_SIGNING_KEYS": SIGNING_SECRET},
    )  # fmt: skip
    children = [int(supervisor.wait_for(rf"Worker {i} started \(pid (\d+)\)")[1]) for i in (0, 1)]
    for pid in (supervisor.pid, *children):
        line = _cmdline(pid)
        assert SASL_PASSWORD not in line and SIGNING_SECRET not in line, line
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.err()[-3000:]
    assert SASL_PASSWORD not in supervisor.err() and SIGNING_SECRET not in supervisor.err()
