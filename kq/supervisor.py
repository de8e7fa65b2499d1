"""Run N worker processes of one consumer group, restart crashed ones, stop all on a signal.

``kq worker --processes N`` runs a ``Supervisor``: it starts N children
(``python -m kq._worker_run``, each told its settings on stdin and its number
in ``KQ_WORKER_INDEX``), and then

- restarts a child that exits while nobody asked it to (a crash, a SIGKILL,
  an out-of-memory kill), after a short backoff that grows for a child that
  keeps failing;
- gives up when more than ``max_restarts`` restarts were needed within
  ``restart_window`` seconds: stops the other children gracefully and raises
  ``SupervisorError`` (``kq worker`` exits with 1);
- with ``watch`` (``kq worker --reload``), restarts every child gracefully
  when ``watch()`` reports a changed file (development);
- on SIGTERM, SIGINT or SIGHUP (a closed terminal) sends SIGTERM to every
  child (a graceful stop: running jobs finish, offsets are committed, the
  group is left), waits for them and returns; a second signal is forwarded
  too, which stops the children at once.

Children run in a session (and process group) of their own, so a Ctrl-C in a
terminal reaches only the supervisor (which forwards it once). When a child
ends, for whatever reason, what is left of its process group (a timed job's
process, or anything a job started there) is SIGKILLed: nothing outlives the
worker that started it. Children stop gracefully by themselves when the
supervisor disappears, even after a SIGKILL of the supervisor: they watch their
stdin, a pipe only the supervisor holds open.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from kq.errors import KQError

__all__ = ["Supervisor", "SupervisorError"]

_LOG = logging.getLogger("kq.supervisor")
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_TICK = 0.1
# Exit codes of a child that mean "stopped as asked" during a shutdown.
_STOPPED = (0, 130, -signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP)


class SupervisorError(KQError):
    """The children kept crashing; the supervisor gave up."""


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    reloading: bool = False
    failures: collections.deque[float] = field(default_factory=collections.deque)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of an ended child's process group (its timed jobs, say)."""
    # The child led the group (start_new_session): its id is the group's, and
    # Linux does not reuse it while any member of the group lives.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Supervisor:
    """Keeps ``processes`` children running ``command``; see the module docstring."""

    def __init__(
        self,
        processes: int,
        settings_for: Callable[[int], str],
        *,
        command: Sequence[str] | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        stop_timeout: float = 45.0,
        env: dict[str, str] | None = None,
        watch: Callable[[], str | None] | None = None,
        watch_interval: float = 1.0,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be 1 or greater")
        self._children = [_Child(i) for i in range(processes)]
        self._settings_for = settings_for
        self._command = list(command or [sys.executable, "-m", "kq._worker_run"])
        self._max_restarts = max_restarts
        self._window = restart_window
        self._stop_timeout = stop_timeout
        self._env = dict(os.environ if env is None else env)
        self._restarts: collections.deque[float] = collections.deque()
        self._signals = 0
        self._forwarded = 0
        self._stop_deadline: float | None = None
        self._give_up: str | None = None
        self._unclean = False
        self._watch = watch
        self._watch_interval = watch_interval
        self._next_watch = 0.0

    @property
    def pids(self) -> list[int]:
        """Pids of the children now running."""
        return [c.pid for c in self._children if c.proc is not None and c.pid is not None]

    def run(self) -> int:
        """Run until a signal (returns 0, or 1 if a child failed to stop) or until giving up."""
        previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
        for sig in _SIGNALS:
            signal.signal(sig, self._on_signal)
        try:
            for child in self._children:
                self._start(child)
            while self._step():
                time.sleep(_TICK)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()
        if self._give_up is not None:
            raise SupervisorError(self._give_up)
        return 1 if self._unclean else 0

    # -- the loop ------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1

    def _stopping(self) -> bool:
        return self._signals > 0 or self._give_up is not None

    def _step(self) -> bool:
        """One pass; False once everything has stopped."""
        now = time.monotonic()
        if self._signals > self._forwarded:
            self._forward(now)
        for child in self._children:
            if child.proc is not None:
                code = child.proc.poll()
                if code is not None:
                    self._exited(child, code, now)
            elif child.restart_at is not None and not self._stopping() and now >= child.restart_at:
                self._start(child)
        if not self._stopping():
            if self._watch is not None and now >= self._next_watch:
                self._next_watch = now + self._watch_interval
                changed = self._watch()
                if changed is not None:
                    self._reload(changed)
            return True
        alive = [c for c in self._children if c.proc is not None]
        if alive and self._stop_deadline is not None and now > self._stop_deadline:
            _LOG.error(
                "Workers %s did not stop within %.0f s; killing them",
                [c.pid for c in alive],
                self._stop_timeout,
            )
            self._unclean = True
            self._kill_all()
            return False
        return bool(alive)

    def _forward(self, now: float) -> None:
        first = self._forwarded == 0 and self._give_up is None
        self._forwarded = self._signals
        if first:
            _LOG.info(
                "Stopping %d workers gracefully (a second signal stops them at once)",
                len(self.pids),
            )
        else:
            _LOG.warning("Second signal: stopping the workers at once")
        self._stop_deadline = self._stop_deadline or now + self._stop_timeout
        self._signal_all(signal.SIGTERM)

    def _reload(self, changed: str) -> None:
        _LOG.info("%s changed: restarting the workers gracefully", changed)
        for child in self._children:
            if child.proc is not None and child.proc.poll() is None:
                child.reloading = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for child in self._children:
            child.restart_at = None
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signum)

    def _exited(self, child: _Child, code: int, now: float) -> None:
        proc, child.proc = child.proc, None
        assert proc is not None
        _kill_group(proc.pid)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if self._stopping():
            if code not in _STOPPED:
                self._unclean = True
            _LOG.info("Worker %d (pid %d) %s", child.index, proc.pid, _describe(code))
            return
        if child.reloading:
            child.reloading = False
            child.restart_at = now
            _LOG.info(
                "Worker %d (pid %d) %s for the reload", child.index, proc.pid, _describe(code)
            )
            return
        self._restarts.append(now)
        while self._restarts and self._restarts[0] < now - self._window:
            self._restarts.popleft()
        child.failures.append(now)
        while child.failures and child.failures[0] < now - self._window:
            child.failures.popleft()
        if len(self._restarts) > self._max_restarts:
            self._give_up = (
                f"workers keep crashing: {len(self._restarts)} exits within"
                f" {self._window:g} s (last: worker {child.index} {_describe(code)}); giving up"
            )
            _LOG.error("%s; stopping the others", self._give_up)
            self._stop_deadline = now + self._stop_timeout
            self._signal_all(signal.SIGTERM)
            return
        delay = min(0.5 * 2 ** (len(child.failures) - 1), 10.0)
        child.restart_at = now + delay
        _LOG.warning(
            "Worker %d (pid %d) %s; restarting it in %.1f s",
            child.index,
            proc.pid,
            _describe(code),
            delay,
        )

    def _start(self, child: _Child) -> None:
        child.restart_at = None
        env = {**self._env, "KQ_WORKER_INDEX": str(child.index)}
        proc = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches only the supervisor
        )
        child.proc = proc
        assert proc.stdin is not None
        try:
            proc.stdin.write(self._settings_for(child.index).encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died already: the loop sees its exit
        _LOG.info("Worker %d started (pid %d)", child.index, proc.pid)

    def _kill_all(self) -> None:
        for child in self._children:
            proc = child.proc
            if proc is None:
                continue
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            _kill_group(proc.pid)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            child.proc = None
