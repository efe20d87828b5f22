"""pytest fixtures of the harness, registered for every test module by tests/conftest.py
(``pytest_plugins``): use them by name, never import them (an imported fixture is a second
definition, with its own instance).

- ``pk`` (session): this pack as ComfyUI loaded it in this process (stas_harness.comfy_env.Pack:
  ``pk.stas`` is the STAS Model Patch node class, ``pk.layout`` the pack's stas_core.layout, ...);
  skips (saying why) when no ComfyUI is found.
- ``comfy_server`` (session): a started stas_harness.server.ComfyServer; skips (saying why) when no
  ComfyUI is found.
- ``browser`` (module): a Playwright Chromium (Debian's /usr/bin/chromium, never a downloaded one);
  installs the ``playwright`` package into the running interpreter if missing; skips (saying why)
  when Chromium is absent.
- ``frontend_page`` (function): a FrontendPage on ``comfy_server``: the ComfyUI frontend loaded on an
  empty graph, ``window.app`` ready; ``.errors()`` = console errors (less known-benign start-up
  noise) + uncaught page errors; ``.evaluate(js, arg)``; any other attribute is the Playwright page's.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from stas_harness.server import CHROMIUM, CHROMIUM_ARGS, ComfyServer, FrontendPage, ensure_playwright, find_comfyui, \
    skip_missing


@pytest.fixture(scope="session")
def pk():
    from stas_harness.comfy_env import Pack, require_comfy
    require_comfy()
    return Pack()


def serve(server_cls=ComfyServer):
    """A fixture body: ``server_cls`` started on the ComfyUI found (a skip when there is none), then cleaned up."""
    found = find_comfyui()
    if found is None:
        skip_missing("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    srv = server_cls(*found)
    srv.start()
    try:
        yield srv
    finally:
        srv.cleanup()


def serve_on_frontend(server_cls, frontend: str):
    """A fixture body: ``serve(server_cls)`` on the testbed's own frontend (``frontend`` "own", from
    ``server.frontend_params()``), or on that newer frontend setup installed (a skip when it is not there)."""
    if frontend == "own":
        yield from serve(server_cls)
        return
    from stas_harness import server as harness
    found = dict(harness.extra_frontends(os.environ["COMFYUI_PATH"]))
    if frontend not in found:
        skip_missing(f"frontend {frontend} is not installed under {harness.testbeds_root()}: run bash scripts/setup.sh")

    class NewerFrontend(server_cls):
        def command(self):
            return super().command() + ["--front-end-root", str(found[frontend])]

    yield from serve(NewerFrontend)


@pytest.fixture(scope="session")
def comfy_server():
    yield from serve(ComfyServer)


_playwright: dict = {}  # the one running Playwright + Chromium, shared by every fixture instance


@pytest.fixture(scope="module")
def browser():
    """Module scope: while Playwright's sync API runs, the main thread has a running asyncio loop,
    so asyncio.run() (in-process ComfyUI tests) would fail in later modules. Shared: a module
    that imports this fixture gets its own fixture definition, and a second sync Playwright
    cannot start while one runs."""
    if not Path(CHROMIUM).exists():
        skip_missing(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (see README, 'Tests')")
    sync_api = ensure_playwright()
    if sync_api is None:
        skip_missing("the playwright Python package is missing and could not be installed (pip install playwright)")
    if not _playwright:
        pw = sync_api.sync_playwright().start()
        _playwright.update(pw=pw, users=0,
                           browser=pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True))
    _playwright["users"] += 1
    yield _playwright["browser"]
    _playwright["users"] -= 1
    if _playwright["users"] == 0:
        _playwright.pop("browser").close()
        _playwright.pop("pw").stop()
        _playwright.clear()


@pytest.fixture
def frontend_page(comfy_server, browser):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    fp = FrontendPage(ctx.new_page(), comfy_server).open()
    yield fp
    ctx.close()


@pytest.fixture
def one_thread():
    """torch on one thread for the test (CPU allocation traces and tiny models: steady, and fair to a parallel run)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
