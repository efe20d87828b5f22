"""A real ComfyUI server (and a headless Chromium page on its frontend) with this pack.

The server runs a ComfyUI testbed *without modifying it*: every path ComfyUI writes to (models,
custom_nodes, input, output, temp, user, its database) lives in a temporary ``--base-directory``
whose ``custom_nodes/`` holds a symlink to this pack (plus ``tests/comfy_test_nodes``, test-only
stand-ins for the text encoder, CLIP vision and VAE). Bytecode writing is off. Importing this
module needs only the standard library (scripts/first_run.py runs with any python3)::

    from stas_harness.server import ComfyServer, find_comfyui
    src, python = find_comfyui()              # $COMFYUI_PATH (+ $COMFYUI_PYTHON or a venv beside it)
    with ComfyServer(src, python) as srv:      # start(): waits until /object_info answers
        srv.url, srv.models_dir, srv.input_dir, srv.output_dir
        srv.object_info()                      # {node_id: schema}, cached
        entry = srv.run(prompt)                # POST /prompt, wait on /history; raises PromptError
        entry["outputs"]                       # per node id: {"images": [...], ...}
        srv.log_tail()                         # the server's output, for failure messages

The pytest fixtures on top of it (comfy_server, browser, frontend_page) are in
stas_harness/fixtures.py.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
TEST_NODES_DIR = PACK_DIR / "tests" / "comfy_test_nodes"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]


FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Validation.Workflows": True,
                     # frontend 1.27 (ComfyUI 0.3.64) throws on a fresh profile when this one is unset
                     "Comfy.Canvas.NavigationMode": "custom",
                     "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasMenu": False}
# 404s a fresh user directory always produces (optional user files); not errors of the page.
BENIGN_404 = ("/user.css", "/api/userdata", "/favicon.ico")
# Messages the stock frontend itself logs at start-up, with or without this pack (a Vue computed
# in frontend 1.49 reads the graph before it exists when the page loads slowly).
BENIGN_CONSOLE = ("ComfyApp graph accessed before initialization",)
# Start every page on an empty graph instead of the default one (whose model downloads the
# frontend would try to look up): the frontend restores the "workflow" entry of localStorage.
EMPTY_GRAPH = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [],
               "config": {}, "extra": {}, "version": 0.4}
INIT_SCRIPT = f"localStorage.setItem('workflow', {json.dumps(json.dumps(EMPTY_GRAPH))});"


class PromptError(RuntimeError):
    """ComfyUI rejected a prompt (validation) or a node raised while executing it."""


def comfy_python_for(src: Path) -> str:
    """The interpreter that runs ComfyUI at ``src``: $COMFYUI_PYTHON, a venv beside or inside it, else ours."""
    env = os.environ.get("COMFYUI_PYTHON")
    if env:
        return env
    for venv in (src.parent / "venv", src / "venv", src / ".venv", src.parent / ".venv"):
        py = venv / "bin" / "python"
        if py.exists():
            return str(py)
    return sys.executable


def find_comfyui() -> tuple[Path, str] | None:
    """($COMFYUI_PATH, its python) when $COMFYUI_PATH is a ComfyUI checkout, else None."""
    p = os.environ.get("COMFYUI_PATH")
    if not p or not (Path(p) / "main.py").exists() or not (Path(p) / "comfy").is_dir():
        return None
    src = Path(p).resolve()
    return src, comfy_python_for(src)


def default_testbeds_root() -> Path:
    """Where scripts/setup.sh builds its ComfyUI installs when STAS_TESTBEDS is unset (scripts/testbeds.sh)."""
    return Path.home() / ".cache" / "comfyui-stas" / "testbeds"


def testbeds_record() -> Path:
    """The file in which scripts/build_testbeds.sh records where it last built the testbeds."""
    return Path.home() / ".cache" / "comfyui-stas" / "testbeds-location"


def testbeds_root() -> Path:
    """Where the testbeds are (scripts/testbeds.sh, found_testbeds_root): $STAS_TESTBEDS, else where
    scripts/build_testbeds.sh last built them (testbeds_record(), while that folder exists), else the default."""
    env = os.environ.get("STAS_TESTBEDS")
    if env:
        return Path(env)
    try:
        recorded = testbeds_record().read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        recorded = ""
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return default_testbeds_root()


def newest_testbed() -> Path | None:
    """src/ of the newest ComfyUI testbed that setup built (comfyui-<version>/{src,venv}), else None."""
    found = []
    for d in testbeds_root().glob("comfyui-*"):
        version = d.name.split("-", 1)[1]
        if (d / "src" / "main.py").exists() and (d / "venv" / "bin" / "python").exists() and \
                all(x.isdigit() for x in version.split(".")):
            found.append((tuple(int(x) for x in version.split(".")), d / "src"))
    return max(found)[1] if found else None


# Newer frontends than the testbeds ship, installed by scripts/setup.sh into
# <testbeds>/frontend-<version>/ (pip --target); the browser tests run them on the newest testbed
# as well, with --front-end-root (tests/test_web_visualizer.py).
EXTRA_FRONTENDS = ("1.58",)
EXTRA_FRONTEND_MIN_COMFYUI = (0, 33)


def extra_frontend_applies(src: Path | str) -> bool:
    """Whether the newer frontends are tested on the ComfyUI at ``src`` (the newest supported only:
    a frontend needs a recent server)."""
    try:
        text = (Path(src) / "comfyui_version.py").read_text()
        return tuple(int(x) for x in text.split("=")[-1].strip().strip("\"'").split(".")[:2]) >= \
            EXTRA_FRONTEND_MIN_COMFYUI
    except (OSError, ValueError):
        return False


def frontend_params() -> list[str]:
    """Browser-test parameters for the testbed in $COMFYUI_PATH: "own" (its own frontend), plus the newer
    frontends setup installs where they apply (the newest testbed)."""
    src = os.environ.get("COMFYUI_PATH")
    if not src or not extra_frontend_applies(src):
        return ["own"]
    return ["own", *EXTRA_FRONTENDS]


def extra_frontends(src: Path | str) -> list[tuple[str, Path]]:
    """[(version, static folder)] of the newer frontends setup installed, for the ComfyUI at ``src``."""
    if not extra_frontend_applies(src):
        return []
    out = []
    for v in EXTRA_FRONTENDS:
        static = testbeds_root() / f"frontend-{v}" / "comfyui_frontend_package" / "static"
        if (static / "index.html").exists():
            out.append((v, static))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One ComfyUI server process on 127.0.0.1 with this pack loaded. See the module docstring."""

    def __init__(self, src: Path | str, python: str | None = None, base_dir: Path | str | None = None,
                 extra_args: tuple[str, ...] = (), test_nodes: bool = True, cpu: bool = True):
        self.src = Path(src).resolve()
        self.cpu = cpu  # False: ComfyUI picks the GPU (bench/workflows_gpu.py)
        self.python = python or comfy_python_for(self.src)
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="stas-comfy-")).resolve()
        self.extra_args = tuple(extra_args)
        self.test_nodes = test_nodes
        self.port = 0
        self.started_at = 0.0
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._object_info: dict | None = None
        self.client_id = uuid.uuid4().hex

    # -- paths ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "comfyui.log"

    def version(self) -> str:
        text = (self.src / "comfyui_version.py").read_text()
        return text.split("=")[-1].strip().strip("\"'")

    # -- lifecycle -----------------------------------------------------------------------
    def _supports(self, flag: str) -> bool:
        return flag in (self.src / "comfy" / "cli_args.py").read_text()

    def _prepare_base(self) -> None:
        nodes = self.base_dir / "custom_nodes"
        for sub in ("models", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        nodes.mkdir(parents=True, exist_ok=True)
        links = {"comfyui-stas": PACK_DIR}
        if self.test_nodes:
            links["stas_test_nodes"] = TEST_NODES_DIR
        for name, target in links.items():
            link = nodes / name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        # ComfyUI ships example inputs (input/example.png) that its own templates load.
        for f in (self.src / "input").glob("*"):
            if f.is_file() and not (self.input_dir / f.name).exists():
                shutil.copy2(f, self.input_dir / f.name)
        # A returning user's frontend: no first-run template dialog; the frontend validates the
        # schema of every workflow it loads (off by default) so the workflow tests see its errors.
        user = self.base_dir / "user" / "default"
        (user / "workflows").mkdir(parents=True, exist_ok=True)
        settings = user / "comfy.settings.json"
        if not settings.exists():
            settings.write_text(json.dumps(FRONTEND_SETTINGS, indent=1))

    def command(self) -> list[str]:
        cmd = [self.python, "main.py", *(["--cpu"] if self.cpu else []), "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base_dir),
               "--database-url", f"sqlite:///{self.base_dir / 'comfyui.db'}",
               "--disable-auto-launch"]
        if self._supports("--disable-api-nodes"):  # newer ComfyUI: no cloud nodes, frontend stays offline
            cmd.append("--disable-api-nodes")
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 300.0) -> "ComfyServer":
        """Start the server and wait until /object_info answers (raises with the log tail if not)."""
        self._prepare_base()
        self.port = free_port()
        self.started_at = time.time()
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        env.pop("COMFYUI_PATH", None)
        # The tiny models run fastest on one CPU thread; on a busy 2-core machine torch's default
        # (one thread per core) made a 10-step tiny run 8x slower (2 s -> 17 s). Like comfy_env.
        if self.cpu:
            env.setdefault("OMP_NUM_THREADS", "1")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), cwd=self.src, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self._object_info = self.get_json("/object_info", timeout=30)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer /object_info within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server process (cleanup() also removes a base dir this object made)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # -- HTTP ----------------------------------------------------------------------------
    def _request(self, path: str, data: bytes | None = None, timeout: float = 30.0):
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def get_json(self, path: str, timeout: float = 30.0):
        return json.loads(self._request(path, timeout=timeout))

    def post_json(self, path: str, obj, timeout: float = 30.0):
        """POST JSON; returns (status, parsed body) without raising on 4xx."""
        try:
            body = self._request(path, json.dumps(obj).encode(), timeout=timeout)
            return 200, json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return e.code, json.loads(body)
            except ValueError:
                return e.code, body.decode(errors="replace")

    def object_info(self, refresh: bool = False) -> dict:
        if self._object_info is None or refresh:
            self._object_info = self.get_json("/object_info", timeout=60)
        return self._object_info

    # -- prompts -------------------------------------------------------------------------
    def submit(self, prompt: dict) -> str:
        """Queue an API-format prompt; returns its prompt_id. Raises PromptError when rejected."""
        status, body = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200:
            raise PromptError(f"ComfyUI rejected the prompt ({status}): {json.dumps(body, indent=1)[:4000]}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """Wait for a queued prompt; returns its /history entry. Raises PromptError on a node error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running a prompt:\n{self.log_tail()}")
            hist = self.get_json(f"/history/{prompt_id}")
            entry = hist.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                st = entry["status"]
                if st.get("status_str") == "error":
                    errs = [m[1] for m in st.get("messages", []) if m[0] == "execution_error"]
                    msg = errs[0].get("exception_message", errs[0]) if errs else st
                    node = errs[0].get("node_type") if errs else "?"
                    raise PromptError(f"node {node} failed: {msg}", errs[0] if errs else st)
                return entry
            time.sleep(0.2)
        self.post_json("/interrupt", {})
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 300.0) -> dict:
        """submit() then wait(): the /history entry of a finished prompt."""
        return self.wait(self.submit(prompt), timeout)

    def output_files(self, entry: dict, node_id: str, key: str = "images") -> list[Path]:
        """Paths of the files a node reported in ``entry['outputs'][node_id][key]``."""
        roots = {"output": self.output_dir, "temp": self.base_dir / "temp", "input": self.input_dir}
        files = entry["outputs"].get(str(node_id), {}).get(key, [])
        return [roots[f.get("type", "output")] / f.get("subfolder", "") / f["filename"] for f in files]



def shrink_prompt(prompt: dict, length: int = 9, steps: int = 4, size: int = 64) -> dict:
    """A copy of an API prompt with tiny video latents and few steps, for CPU runs of the example
    workflows (tests/test_workflows.py, bench/workflows_gpu.py --shrink); the graph is otherwise
    unchanged. A KSamplerAdvanced pair keeps its split, at half the steps."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        ct, inp = node["class_type"], node["inputs"]
        if ct in ("EmptyHunyuanLatentVideo", "Wan22ImageToVideoLatent", "WanImageToVideo", "EmptyLTXVLatentVideo"):
            inp.update(width=size, height=size, length=length)
        elif ct == "LTXVEmptyLatentAudio":
            inp["frames_number"] = length
        elif ct in ("KSampler", "BasicScheduler", "LTXVScheduler"):
            inp["steps"] = steps
        elif ct == "KSamplerAdvanced":
            split = inp["start_at_step"] > 0
            inp.update(steps=steps, start_at_step=steps // 2 if split else 0,
                       end_at_step=10000 if split else steps // 2)
    return out

# -- frontend (Playwright + Debian Chromium) --------------------------------------------------

def ensure_playwright():
    """Import playwright.sync_api, installing the package into this interpreter if missing.

    Only the Python package is installed (its driver ships inside the wheel); the browser is
    Debian's Chromium, never one that `playwright install` would download."""
    try:
        from playwright import sync_api
        return sync_api
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], check=False)
        try:
            from playwright import sync_api
            return sync_api
        except ImportError:
            return None


class FrontendPage:
    """A Playwright page on a ComfyUI server's frontend, with what the page reported."""

    def __init__(self, page, server: ComfyServer):
        self.page = page
        self.server = server
        page.context.add_init_script(INIT_SCRIPT)
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed_requests: list[tuple[int, str]] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self.page_errors.append(f"{e}\n{getattr(e, 'stack', '')}"))
        page.on("response", lambda r: self.failed_requests.append((r.status, r.url)) if r.status >= 400 else None)

    def _on_console(self, msg) -> None:
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if msg.text.startswith("Failed to load resource") and any(b in url for b in BENIGN_404):
            return
        if msg.text.startswith(BENIGN_CONSOLE):
            return
        self.console_errors.append(f"{msg.text} ({url})" if url else msg.text)

    def errors(self) -> list[str]:
        """Console errors (less the benign 404s of a fresh user dir) and uncaught page errors."""
        return self.console_errors + self.page_errors

    def open(self, timeout_ms: int = 120_000) -> "FrontendPage":
        self.page.goto(self.server.url, wait_until="domcontentloaded", timeout=timeout_ms)
        self.page.wait_for_function(
            "() => !!(window.app && window.LiteGraph && window.app.canvas && ('isGraphReady' in window.app"
            " ? window.app.isGraphReady : window.app.graph))", timeout=timeout_ms)
        return self

    def evaluate(self, js: str, arg=None):
        return self.page.evaluate(js, arg)

    def __getattr__(self, name):
        return getattr(self.page, name)


def skip_missing(reason: str):
    """Skip a test whose environment is missing, or fail it where scripts/test.sh demands that
    environment (STAS_REQUIRE_ENV=1 on testbed runs under CI), so a skip cannot pass for a run."""
    import pytest  # only tests call this; the scripts using this module need only the stdlib
    if os.environ.get("STAS_REQUIRE_ENV", "") not in ("", "0"):
        pytest.fail(f"required by STAS_REQUIRE_ENV: {reason}", pytrace=False)
    pytest.skip(reason)
