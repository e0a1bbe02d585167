"""The documentation site: it builds strictly, renders in a real headless Chromium with its
navigation, its runnable pages run, and it documents every logger and the APIs users need.
"""

from __future__ import annotations

import functools
import http.server
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
RUNNABLE_PAGES = (
    "guides/httpx.md",
    "guides/extending.md",
    "guides/testing.md",
    "guides/routing.md",
)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mkdocs build --strict``: any warning (a broken link, a bad docstring) fails."""
    directory = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return directory


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requested: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requested.append(self.path)


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[tuple[str, list[str]]]:
    """The built site over HTTP on loopback (directory URLs need a server), and the paths
    the browser asked for."""
    requested: list[str] = []
    handler = type("Handler", (QuietHandler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def dump_dom(chromium: str, url: str) -> str:
    """The DOM after Chromium loaded the page and ran its scripts."""
    with tempfile.TemporaryDirectory(prefix="lbclient-chromium-") as profile:
        done = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(
    ("path", "heading", "content"),
    [
        ("", "lbclient", "pipeline.svg"),
        ("guides/extending/", "Writing your own registry, scheduler or filter", "A scheduler"),
        ("api/lbclient/", "lbclient", "lbclient.LoadBalancer"),
    ],
)
def test_pages_render_in_chromium_with_navigation(
    served: tuple[str, list[str]], chromium_path: str, path: str, heading: str, content: str
) -> None:
    base, requested = served
    dom = dump_dom(chromium_path, f"{base}/{path}")
    assert re.search(rf"<h1[^>]*>(<code>)?{re.escape(heading)}", dom), dom[:2000]
    assert content in dom
    navigation = re.search(r'<nav class="md-nav md-nav--primary".*?</nav>\s*</div>', dom, re.S)
    assert navigation, "the primary navigation is missing"
    for entry in ("Getting started", "Guides", "Writing your own", "API reference", "Logging"):
        assert entry in navigation.group(0), entry
    assert 'class="md-nav__link md-nav__link--active"' in dom  # the current page is marked
    assert 'data-md-component="search"' in dom  # Material's scripts ran
    stylesheets = [p for p in requested if re.search(r"/assets/stylesheets/main\.[^/]*\.css", p)]
    assert stylesheets, "the browser never asked for the theme's stylesheet"


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_runnable_pages_run(page: str) -> None:
    """Every ``python`` block of the page, in order, in a fresh interpreter."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
    assert blocks
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_every_logger_is_documented() -> None:
    sources = [*ROOT.glob("lbclient/**/*.py"), *ROOT.glob("plugins/*/lbclient_*/**/*.py")]
    used = {
        name
        for source in sources
        for name in re.findall(r'getLogger\("([^"]+)"\)', source.read_text())
    }
    assert "lbclient.health" in used
    table = (DOCS / "guides/logging.md").read_text()
    documented = set(re.findall(r"^\| `(lbclient[\w.]*)` \|", table, re.M))
    assert documented == used


@pytest.mark.parametrize(
    ("page", "needles"),
    [
        ("guides/httpx.md", ["mounts=", "async with", "aclose()", "AsyncLoadBalancedTransport"]),
        ("guides/grpc.md", ["secure_channel", "ssl_target_name_override"]),
        ("guides/extending.md", ["lbclient.Registry", "register_scheduler", "Filter", "filters="]),
        ("guides/errors-and-stats.md", ["ServiceNotFound", 'lb.stats("orders")']),
        ("api/grpc.md", ["::: lbclient.grpc.secure_channel"]),
        ("bounding-calls.md", ["## Hedged requests", "max_requests", "CircuitBreaker", "429"]),
        ("api/extending.md", ["::: lbclient.Registry", "::: lbclient.Scheduler"]),
    ],
)
def test_documented(page: str, needles: list[str]) -> None:
    text = (DOCS / page).read_text()
    for needle in needles:
        assert needle in text, needle
