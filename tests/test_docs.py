"""The documentation site: it builds without warnings and every example runs.

Each ```python block of a page runs, in order, in one module per page, against
the real broker (``BOOTSTRAP``) and a fresh topic (``TOPIC``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_every_page_has_an_example_or_is_reference() -> None:
    with_code = [p.name for p in PAGES if _BLOCK.search(p.read_text())]
    assert len(with_code) >= 9, with_code


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_examples_run(
    page: Path, bootstrap: str, make_topic: Callable[..., str], request: pytest.FixtureRequest
) -> None:
    blocks = _BLOCK.findall(page.read_text())
    if not blocks:
        return  # a page without executable examples (e.g. the command reference)
    name = f"kq_docs_{page.stem.replace('-', '_')}"
    # A real module, so jobs defined in examples pickle by reference and run
    # in this process with their globals (as in a user's own module).
    module = types.ModuleType(name)
    module.__dict__.update(BOOTSTRAP=bootstrap, TOPIC=make_topic(partitions=2))
    sys.modules[name] = module
    request.addfinalizer(lambda: sys.modules.pop(name, None))
    for number, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{page.name} block {number}", "exec"), module.__dict__)
        except Exception as exc:
            raise AssertionError(f"{page.name}, python block {number} failed: {exc!r}") from exc


def test_site_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=DOCS.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "index.html").exists() and (tmp_path / "retries" / "index.html").exists()
