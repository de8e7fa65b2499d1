"""Running one worker process from the settings of ``kq worker``.

``run_worker(settings)`` runs in the ``kq worker`` process itself, or, under
the supervisor (``--processes N``), in each child started as
``python -m kq._worker_run``: the child reads its settings as one JSON line on
stdin and then watches stdin; when the supervisor goes away (EOF, even after a
SIGKILL of the supervisor) the child stops gracefully, as on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

__all__ = ["WorkerSettings", "run_worker"]

# SIGHUP (a closed terminal) stops a worker as SIGTERM does; the worker itself
# takes over SIGTERM and SIGINT once it runs.
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


@dataclass
class WorkerSettings:
    """Everything a worker process needs; JSON-serializable for the supervisor's children."""

    bootstrap: str
    topic: str
    group: str
    client_config: dict[str, str] = field(default_factory=dict)
    apps: list[str] = field(default_factory=list)
    callback: str | None = None
    deserializer: str | None = None
    json_jobs: list[str] = field(default_factory=list)
    """Allow-list for ``kq.json_jobs.JsonJobLoader``; non-empty: jobs are read as JSON."""
    signing_keys: list[str] = field(default_factory=list)
    max_message_bytes: int | None = None
    concurrency: int = 1
    max_in_flight: int = 1000
    shutdown_timeout: float = 30.0
    max_attempts: int | None = None
    backoff: float = 1.0
    retry_timeouts: bool = False
    dead_letter_topic: str | None = None
    keep_invalid: bool | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    reload: bool = False
    lag_interval: float = 5.0
    log_level: str = "INFO"
    log_jobs: bool = False
    """KQ's per-job lines on ``kq.worker`` at INFO (otherwise: WARNING and up only)."""
    summary_interval: float = 60.0
    """Seconds between summary lines on ``kq.runtime`` (0: none)."""
    index: int | None = None
    """The child's number under the supervisor (also ``KQ_WORKER_INDEX``); None when alone."""

    def to_json(self) -> str:
        """One line of JSON."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        """Inverse of ``to_json``."""
        return cls(**json.loads(text))


def configure_logging(level: str, log_jobs: bool) -> None:
    """Log to stderr at ``level``; KQ's per-job lines only if asked (``log_jobs`` or DEBUG).

    Failures, timeouts and invalid messages stay on ``kq.worker`` (at ERROR);
    what the per-job INFO lines told is in the summary on ``kq.runtime``.
    """
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    jobs = logging.getLogger("kq.worker")
    if log_jobs or level.upper() == "DEBUG":
        jobs.setLevel(logging.NOTSET)
    else:
        jobs.setLevel(logging.WARNING)


def worker_options(settings: WorkerSettings) -> dict[str, Any]:
    """``Worker`` keyword options from the settings: imports ``--app``, callback, deserializer.

    Raises ``kq._imports.ImportPathError`` for a path that leads nowhere.
    """
    from kq._imports import ImportPathError, cwd_on_path, import_object
    from kq.retry import RetryPolicy

    cwd_on_path()  # job modules are unpickled by module name
    options: dict[str, Any] = {}
    for app in settings.apps:
        obj = import_object(app, "--app")
        if ":" in app:
            if not isinstance(obj, dict):
                raise ImportPathError(
                    f"--app {app!r} must name a dict of Worker options, not {type(obj).__name__}"
                )
            options.update(obj)
    if settings.callback:
        options["callback"] = import_object(settings.callback, "callback", require_attr=True)
    if settings.deserializer:
        options["deserializer"] = import_object(
            settings.deserializer, "deserializer", require_attr=True
        )
    if settings.json_jobs:
        from kq.json_jobs import JsonJobLoader

        options["deserializer"] = JsonJobLoader(allow=settings.json_jobs)
    if settings.signing_keys:
        options["signing_keys"] = list(settings.signing_keys)
    if settings.max_message_bytes is not None:
        options["max_message_bytes"] = settings.max_message_bytes
    for name in ("callback", "deserializer"):
        if options.get(name) is not None and not callable(options[name]):
            raise ImportPathError(f"{name} {getattr(settings, name)!r} is not callable")
    if settings.max_attempts is not None:
        retry_on = {"failure", "timeout"} if settings.retry_timeouts else {"failure"}
        options["retry"] = RetryPolicy(
            max_attempts=settings.max_attempts,
            backoff=settings.backoff,
            retry_on=frozenset(retry_on),
        )
    if settings.dead_letter_topic:
        options["dead_letter_topic"] = settings.dead_letter_topic
    if settings.keep_invalid is not None:
        options["keep_invalid"] = settings.keep_invalid
    options.setdefault("concurrency", settings.concurrency)
    options.setdefault("max_in_flight", settings.max_in_flight)
    options.setdefault("shutdown_timeout", settings.shutdown_timeout)
    return options


class _StopBeforeStart(BaseException):
    """SIGTERM or SIGINT arrived while the worker was still being set up."""


def run_worker(settings: WorkerSettings) -> int:
    """Build the worker (and its metrics endpoint), run it until stopped; return the exit code.

    A SIGTERM, SIGINT or SIGHUP before the worker runs ends the process quietly
    with 0; once it runs, the worker's own graceful shutdown handles them (a
    second one stops it at once).
    """
    running: list[Any] = []
    asked: list[int] = []  # signals received while the worker runs

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not running:
            raise _StopBeforeStart
        asked.append(signum)
        immediately = len(asked) > 1  # a second signal: at once
        logging.getLogger("kq.runtime").info(
            "Signal %s: %s",
            signal.Signals(signum).name,
            "stopping at once" if immediately else "finishing running jobs, then stopping",
        )
        running[0].stop(immediately=immediately)

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS} if main else {}
    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        return _run(settings, running)
    except _StopBeforeStart:
        logging.getLogger("kq.runtime").info("Stopped before the worker started")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(settings: WorkerSettings, running: list[Any]) -> int:
    from kq._summary import GroupLag, Observers, Summary
    from kq.worker import Worker

    options = worker_options(settings)
    config: dict[str, Any] = dict(settings.client_config)
    scheduler_config = {**config, **options.pop("scheduler_config", {})}
    observer = None
    server = None
    summary = lag = None
    if settings.summary_interval > 0:
        lag = GroupLag(settings.bootstrap, config, settings.topic, settings.group)
        summary = Summary(settings.topic, settings.summary_interval, lag)
    if settings.metrics_port is not None:
        from kq.metrics import PrometheusObserver, serve

        port = settings.metrics_port + (settings.index or 0)
        observer = PrometheusObserver(settings.topic, settings.group)
        try:
            server = serve(port, settings.metrics_host)
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {settings.metrics_host}:{port}: {exc.strerror}"
            ) from exc
        logging.getLogger("kq.metrics").info(
            "Serving metrics on http://%s:%d/metrics", settings.metrics_host, port
        )
    if observer is not None or summary is not None:
        # beside one the user passed in an --app dict
        options["observer"] = Observers(options.get("observer"), observer, summary)
    worker = Worker.connect(
        settings.bootstrap,
        settings.topic,
        settings.group,
        consumer_config=config,
        scheduler_config=scheduler_config,
        **options,
    )
    if observer is not None:
        observer.watch(worker)
        observer.start_lag_monitor(settings.bootstrap, config, settings.lag_interval)
    if not logging.getLogger("kq.worker").isEnabledFor(logging.INFO):
        logging.getLogger("kq.runtime").info(
            "Running %r: one line per job is off (--log-jobs shows it); %s",
            worker,
            f"a summary every {settings.summary_interval:g} s"
            if summary is not None
            else "no summary (--summary-interval 0)",
        )
    if summary is not None:
        summary.watch(lambda: worker.in_flight)
        summary.start()
    running.append(worker)
    try:
        worker.start()
    finally:
        if summary is not None:
            summary.stop()
        if lag is not None:
            lag.close()
        if observer is not None:
            observer.close()
        if server is not None:
            server.shutdown()
        worker.consumer.close()
    return 0


def _stop_when_stdin_closes() -> None:
    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="kq-supervisor-watch", daemon=True).start()


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _StopBeforeStart


def _child_main() -> int:
    """Entry point of a supervised child: settings on stdin's first line."""
    signal.signal(signal.SIGTERM, _raise_stop)  # until run_worker takes over
    try:
        return _child(_read_settings())
    except _StopBeforeStart:
        return 0


def _read_settings() -> WorkerSettings:
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            raise _StopBeforeStart  # the supervisor is gone already
        line += chunk
    return WorkerSettings.from_json(line.decode())


def _child(settings: WorkerSettings) -> int:
    configure_logging(settings.log_level, settings.log_jobs)
    _stop_when_stdin_closes()
    from kq._cli_errors import one_line

    try:
        return run_worker(settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = one_line(exc)
        if message is None:
            raise
        print(f"kq worker {settings.index}: error: {message}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(_child_main())
