"""The documentation site: it builds without warnings and every example runs.

Each ```python block of a page runs, in order, in one module per page, against
the real broker (``BOOTSTRAP``) and a fresh topic (``TOPIC``).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
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


def _build(site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=DOCS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_site_builds_strictly(tmp_path: Path) -> None:
    _build(tmp_path)
    assert (tmp_path / "index.html").exists() and (tmp_path / "retries" / "index.html").exists()


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium")
    assert browser, "Debian's chromium is needed (scripts/test.sh installs it)"
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_site_renders_in_a_headless_browser_with_search_sidebar_and_highlighting(
    tmp_path: Path,
) -> None:
    """What a reader sees: the Material theme's search box, a sidebar of every page,
    highlighted code; and a screenshot of a page (``.cache/docs-screenshot.png``)."""
    site = tmp_path / "site"
    _build(site)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        dom = _chromium("--virtual-time-budget=5000", "--dump-dom", f"{base}/retries/").stdout
        shot = DOCS.parent / ".cache" / "docs-screenshot.png"
        shot.parent.mkdir(exist_ok=True)
        taken = _chromium("--window-size=1280,900", f"--screenshot={shot}", f"{base}/index.html")
        assert taken.returncode == 0, taken.stderr[-2000:]
    finally:
        server.shutdown()
        thread.join(10)
    assert 'class="md-search__input"' in dom  # the search box
    # the sidebar links every page of the nav, by its title
    linked = re.findall(
        r'<a href="[^"]*" class="md-nav__link[^"]*">\s*<span class="md-ellipsis">\s*([^<]+?)\s*<',
        dom,
    )
    titles = re.findall(r"^  - (.+?): \S+\.md$", (DOCS.parent / "mkdocs.yml").read_text(), re.M)
    assert len(titles) >= 11 and set(titles) <= set(linked), (titles, linked)
    # Python code highlighted by Pygments: keywords and names in spans of their own
    assert re.search(r'<span class="kn">from</span>', dom), "no highlighted code"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 900)
