"""Fixtures shared by several test files."""

import http.server
import os
import re
import threading
from pathlib import Path

import pytest
import torch

from lrp import composites, plugins


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker gets its share of the cores for torch's intra-op threads (and passes it
    on to the workflows it starts). Why: two workers of two threads each on two cores spin against each other;
    measured on the 2-core machine, a test of the graph engine took 51 s that way and 5 s with one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


_share_the_cores()

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_analyzers.py"


@pytest.fixture(scope="module")
def example():
    """The example plugin (examples/my_analyzers.py), loaded: its analyzers are registered."""
    return plugins.load([str(EXAMPLE)])


@pytest.fixture
def registry():
    """Restore the global registry (and the loader's memory) after a test that registers analyzers."""
    saved, loaded = dict(composites.REGISTRY), dict(plugins._LOADED)
    yield
    composites.REGISTRY.clear()
    composites.REGISTRY.update(saved)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)


# ---------------------------------------------------------------- the HTTP server of test_acquire*.py


@pytest.fixture
def no_proxy(monkeypatch):
    """The test server is on 127.0.0.1; a proxy from the environment must not intercept it."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class Server:
    """Knobs for the handler; every request is logged as (path, Range header, status)."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None, int]] = []
        self.drop_after: dict[str, int] = {}   # path -> send only K body bytes, once
        self.drop_always: dict[str, int] = {}  # path -> send only K body bytes, every time
        self.not_found: set[str] = set()
        self.ignore_range: set[str] = set()
        self.fail_once: dict[str, int] = {}    # path -> status to answer once (e.g. 503)
        self.fail_always: dict[str, int] = {}  # path -> status to answer every time
        self.headers: dict[str, dict[str, str]] = {}  # path -> extra headers of its 200/206 answers
        self.url = ""

    def put(self, path: Path) -> str:
        """URL of a file that lives in the served folder."""
        return f"{self.url}/{path.relative_to(self.root).as_posix()}"


def _handler(state: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
            state.requests.append((self.path, self.headers.get("Range"), code))
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if code >= 300:
                self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            path = self.path
            if path in state.not_found:
                return self._status(404)
            if path in state.fail_once:
                return self._status(state.fail_once.pop(path))
            if path in state.fail_always:
                return self._status(state.fail_always[path])
            file = state.root / path.lstrip("/")
            if not file.is_file():
                return self._status(404)
            data = file.read_bytes()
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if m and path not in state.ignore_range:
                start = int(m.group(1))
                if start >= len(data):
                    return self._status(416, {"Content-Range": f"bytes */{len(data)}"})
                self._status(206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                                   "Content-Length": str(len(data) - start), **state.headers.get(path, {})})
            else:
                self._status(200, {"Content-Length": str(len(data)), **state.headers.get(path, {})})
            body = data[start:]
            if path in state.drop_after or path in state.drop_always:
                k = state.drop_after.pop(path) if path in state.drop_after else state.drop_always[path]
                body = body[:k]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()

    return Handler


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    state = Server(root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)

