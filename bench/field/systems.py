"""The systems of the field benchmark: how each starts a worker and enqueues jobs.

``kq`` and ``raw`` (the ceilings of kq's own ratios) run in the project's venv;
every peer runs in its own (``envs.ENVS``), from ``bench/field/peers``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bench.field.envs import ENVS, PEERS_DIR, PeerEnv, clean_env
from bench.field.procs import Proc, Procs


@dataclass(frozen=True)
class System:
    """One library under test."""

    name: str
    label: str
    env: PeerEnv | None  # None: the project's venv
    script: str

    @property
    def path(self) -> str:
        """Its script in ``bench/field/peers``."""
        return str(PEERS_DIR / self.script)

    @property
    def python(self) -> str:
        """The interpreter of its environment."""
        return str(self.env.python) if self.env is not None else sys.executable

    def worker_command(self, concurrency: int) -> list[str]:
        """The documented way to start one worker of this library (see each peer's docstring)."""
        c = str(concurrency)
        py = self.python
        if self.name == "taskiq":
            return [
                *(py, "-m", "taskiq", "worker", "taskiq_peer:broker", "--workers", "1"),
                *("--max-async-tasks", c, "--ack-type", "when_executed"),
                *("--log-level", "WARNING"),
            ]
        if self.name == "faststream":
            return [py, "-m", "faststream", "run", "faststream_peer:app", "--log-level", "warning"]
        if self.name == "celery":
            pool = ["-P", "solo"] if concurrency == 1 else ["-P", "threads", "-c", c]
            return [
                *(py, "-m", "celery", "-A", "celery_peer", "worker", *pool),
                *("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"),
            ]
        if self.name == "faust":
            return [py, self.path, "worker", "-l", "warn", "--without-web"]
        return [py, self.path, "worker"]  # kq, raw

    def enqueue_command(self, *args: object) -> list[str]:
        """``PEER.py enqueue ARGS``."""
        return [self.python, self.path, "enqueue", *(str(a) for a in args)]

    def start(
        self,
        procs: Procs,
        name: str,
        argv: list[str],
        settings: dict[str, str],
        workdir: Path,
    ) -> Proc:
        """Start ``argv`` under ``launch.py`` with the run's ``FIELD_*`` settings."""
        env = clean_env({"PYTHONPATH": str(PEERS_DIR), **settings})
        if self.env is None:
            env = {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
        launch = [argv[0], str(PEERS_DIR / "launch.py"), *argv]
        # Run in the run's folder: Faust keeps a data folder in its working directory.
        return procs.start(name, launch, env, workdir)


KQ = System("kq", "kq", None, "kq_peer.py")
RAW = System("raw", "raw confluent-kafka loop", None, "raw_peer.py")
TASKIQ = System("taskiq", "taskiq", ENVS["taskiq"], "taskiq_peer.py")
FASTSTREAM = System("faststream", "FastStream", ENVS["faststream"], "faststream_peer.py")
CELERY = System("celery", "Celery", ENVS["celery"], "celery_peer.py")
FAUST = System("faust", "Faust", ENVS["faust"], "faust_peer.py")

PEERS = (TASKIQ, FASTSTREAM, CELERY, FAUST)
SYSTEMS = {s.name: s for s in (KQ, RAW, *PEERS)}
