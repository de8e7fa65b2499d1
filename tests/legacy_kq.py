"""A separate virtual environment with the original KQ 2.2.1, for migration tests and benchmarks.

The environment is created once (file-locked, so concurrent test or benchmark
processes don't race) at ``<repo>/.cache/legacy-kq-2.2.1``, or wherever the
``KQ_LEGACY_VENV`` environment variable points. It holds ``kq==2.2.1`` from PyPI,
the kafka-python and dill versions of this process's environment (dill pickles
must read the same on both sides; kafka-python 3.x speaks to Kafka 4.x brokers,
which 2.x does not), and a setuptools that still ships ``pkg_resources`` (KQ 2.2.1
imports it to read its own version).

Old KQ is only ever imported in subprocesses started by ``run_legacy``: never in
the calling process, which has the new ``kq`` under the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

LEGACY_KQ_VERSION = "2.2.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = REPO_ROOT / ".cache" / f"legacy-kq-{LEGACY_KQ_VERSION}"
CREATE_TIMEOUT = 600.0  # seconds for each step of creating the environment

_STAMP = ".kq-legacy.json"
_cached: Path | None = None

# Variables that would let the subprocess see this process's packages (the new kq).
_SCRUBBED_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


def venv_dir() -> Path:
    """Where the legacy environment lives (``KQ_LEGACY_VENV`` or the default)."""
    override = os.environ.get("KQ_LEGACY_VENV")
    return Path(override).expanduser().resolve() if override else DEFAULT_VENV


def requirements() -> list[str]:
    """What goes into the legacy environment, pinned to match this process where it matters."""
    dill = importlib.metadata.version("dill")
    try:
        kafka_python = f"kafka-python=={importlib.metadata.version('kafka-python')}"
    except importlib.metadata.PackageNotFoundError:
        kafka_python = "kafka-python>=3,<4"
    return [
        f"kq=={LEGACY_KQ_VERSION}",
        f"dill=={dill}",
        kafka_python,
        "setuptools<81",  # KQ 2.2.1's __init__ imports pkg_resources
    ]


def _python_in(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp_for(reqs: Sequence[str]) -> dict[str, object]:
    return {"requirements": list(reqs), "base": list(sys.version_info[:2])}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_step(cmd: Sequence[str | os.PathLike[str]], what: str) -> None:
    with tempfile.TemporaryDirectory(prefix="kq-legacy-") as cwd:
        proc = subprocess.run(
            [os.fspath(c) for c in cmd],
            cwd=cwd,
            env=_clean_env(()),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CREATE_TIMEOUT,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"creating the legacy KQ environment failed at {what} (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}"
        )


def _create(venv: Path, reqs: Sequence[str]) -> None:
    if venv.exists():
        if any(venv.iterdir()) and not (venv / "pyvenv.cfg").exists():
            raise RuntimeError(f"{venv} exists and is not a virtual environment; not replacing it")
        shutil.rmtree(venv)
    _run_step([sys.executable, "-m", "venv", venv], "python -m venv")
    python = _python_in(venv)
    pip: list[str | os.PathLike[str]] = [
        python,
        "-m",
        "pip",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
    ]
    _run_step([*pip, "install", *reqs], "pip install")
    check = (
        "import json, dill, kafka, kq; "
        "print(json.dumps([kq.__version__, dill.__version__, kafka.__version__, kq.__file__]))"
    )
    _run_step([python, "-c", check], "import check")


def legacy_python() -> Path:
    """The python of the KQ 2.2.1 environment; creates the environment on first use."""
    global _cached
    if _cached is not None:
        return _cached
    venv = venv_dir()
    reqs = requirements()
    want = _stamp_for(reqs)
    stamp = venv / _STAMP
    with _locked(venv.parent / f"{venv.name}.lock"):
        try:
            have = json.loads(stamp.read_text())
        except (OSError, ValueError):
            have = None
        if have != want or not _python_in(venv).exists():
            _create(venv, reqs)
            stamp.write_text(json.dumps(want))  # written last: marks a complete environment
    _cached = _python_in(venv)
    return _cached


def creation_seconds() -> float:
    """Time ``legacy_python()`` takes now (0-ish when the environment exists already)."""
    started = time.monotonic()
    legacy_python()
    return time.monotonic() - started


def _clean_env(
    pythonpath: Sequence[str | os.PathLike[str]], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(os.fspath(p) for p in pythonpath)
    if extra:
        env.update(extra)
    return env


def run_legacy(
    script: str | os.PathLike[str],
    *args: str,
    timeout: float,
    pythonpath: Sequence[str | os.PathLike[str]] = (),
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run Python in the KQ 2.2.1 environment and return its exit code and text output.

    ``script`` is source code when a ``str``, a script file when a path
    (``pathlib.Path``). ``args`` become its ``sys.argv[1:]``. ``pythonpath``
    lists folders to import from (e.g. modules of job functions); this
    process's own ``PYTHONPATH`` is not passed on, so the new ``kq`` never
    shadows the old one. Code runs in a temporary folder unless ``cwd`` is
    given. Raises ``subprocess.TimeoutExpired`` (with the output so far) when
    the process runs past ``timeout`` seconds; it is killed then (the exception's
    ``stdout``/``stderr`` are bytes). A script file's own folder comes first on
    ``sys.path``: keep it out of the repository root, where the new ``kq`` lives.
    """
    python = legacy_python()
    with tempfile.TemporaryDirectory(prefix="kq-legacy-run-") as tmp:
        if isinstance(script, str):
            path = Path(tmp) / "legacy_script.py"
            path.write_text(script)
        else:
            path = Path(script).resolve()
        return subprocess.run(
            [os.fspath(python), os.fspath(path), *args],
            cwd=os.fspath(cwd) if cwd is not None else tmp,
            env=_clean_env(pythonpath, env),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


if __name__ == "__main__":
    seconds = creation_seconds()
    print(f"{legacy_python()} (ready in {seconds:.1f} s)")
