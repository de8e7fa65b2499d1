"""One virtual environment per peer, pinned, created once under ``.cache/field/``.

Each environment is rebuilt when its requirements change (a stamp file records
them). Creation is file-locked, so two benchmark processes never build the
same one at once. The peers' scripts (``bench/field/peers``) run in them with
a scrubbed environment: nothing of the project's venv (kq) is visible there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import REPO_ROOT

ENV_ROOT = REPO_ROOT / ".cache" / "field"
PEERS_DIR = Path(__file__).resolve().parent / "peers"
CREATE_TIMEOUT = 900.0
_STAMP = ".field-env.json"
_SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


@dataclass(frozen=True)
class PeerEnv:
    """A peer's environment: its name, pinned requirements, and what to report of it."""

    name: str
    requirements: tuple[str, ...]
    report: tuple[str, ...]  # distributions whose installed versions the report names

    @property
    def path(self) -> Path:
        """Where the environment lives."""
        return ENV_ROOT / self.name

    @property
    def python(self) -> Path:
        """Its interpreter."""
        return self.path / "bin" / "python"


# Pinned to the newest releases when the field benchmark was written; the
# Kafka clients under them are pinned too (aiokafka, confluent-kafka), so a
# new client release cannot change a figure unnoticed.
ENVS: dict[str, PeerEnv] = {
    "taskiq": PeerEnv(
        "taskiq",
        ("taskiq==0.13.0", "taskiq-aio-kafka==1.0.0", "aiokafka==0.14.0", "kafka-python==3.0.12"),
        ("taskiq", "taskiq-aio-kafka", "aiokafka"),
    ),
    "faststream": PeerEnv(
        "faststream",
        ("faststream[kafka,cli]==0.7.8", "aiokafka==0.14.0"),
        ("faststream", "aiokafka"),
    ),
    "celery": PeerEnv(
        "celery",
        ("celery==5.7.0", "kombu[confluentkafka]==5.7.0"),
        ("celery", "kombu", "confluent-kafka"),
    ),
    "faust": PeerEnv(
        "faust",
        ("faust-streaming==0.15.3", "aiokafka==0.14.0"),
        ("faust-streaming", "aiokafka"),
    ),
}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would leak the project's venv into a peer's."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO_ROOT))
    )
    if extra:
        env.update(extra)
    return env


def _run(cmd: Sequence[str | os.PathLike[str]], what: str) -> str:
    with tempfile.TemporaryDirectory(prefix="kq-field-env-") as cwd:
        proc = subprocess.run(
            [os.fspath(c) for c in cmd],
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CREATE_TIMEOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _want(env: PeerEnv) -> dict[str, object]:
    return {"requirements": list(env.requirements), "base": list(sys.version_info[:3])}


def prepare(env: PeerEnv) -> dict[str, str]:
    """Create ``env`` unless it is up to date; return the installed versions it reports."""
    stamp = env.path / _STAMP
    with _locked(ENV_ROOT / f"{env.name}.lock"):
        try:
            have = json.loads(stamp.read_text())
        except (OSError, ValueError):
            have = None
        if have is None or have.get("want") != _want(env) or not env.python.exists():
            if env.path.exists():
                shutil.rmtree(env.path)
            _run([sys.executable, "-m", "venv", env.path], f"python -m venv {env.path}")
            pip = [env.python, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
            _run([*pip, "install", *env.requirements], f"pip install into {env.name}")
            code = (
                "import importlib.metadata as m, json, sys; "
                "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
            )
            versions = json.loads(_run([env.python, "-c", code, *env.report], "version check"))
            # written last: marks a complete environment
            stamp.write_text(json.dumps({"want": _want(env), "versions": versions}))
            return dict(versions)
        return dict(have["versions"])


if __name__ == "__main__":
    for peer in ENVS.values():
        print(peer.name, prepare(peer), flush=True)
