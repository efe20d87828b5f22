from pathlib import Path

# The harness (stas_harness/, at the repository root, which pyproject's pythonpath puts on sys.path):
# its fixtures pk, comfy_server, browser, frontend_page are registered once here, so every test
# module shares one ComfyUI server and one Chromium. Unit tests import the pure-torch core as the
# top-level package stas_core; integration tests reach the pack's own modules through the module
# ComfyUI registered (stas_harness.comfy_env.pack_module / the pk fixture).
pytest_plugins = ["stas_harness.fixtures"]

# Markers (unknown ones are errors): select with -m, e.g. `bash scripts/test.sh -m "not slow"`.
MARKERS = {
    "integration": "needs a real ComfyUI (COMFYUI_PATH, a testbed): in process or as a server",
    "browser": "needs headless Chromium and playwright (the ComfyUI frontend); implies integration",
    "slow": "takes more than about 5 s on the 2-core CI machine (a testbed run)",
}


class _RootIsNotAPackage:
    """Collect the repository root as a plain directory, not as a Python package.

    The root ``__init__.py`` is ComfyUI's entry point for this custom node folder and imports
    ``comfy_api``; pytest 8+ would import it as a package before the first test, outside
    ComfyUI, which fails (or loads the pack a second time under another name).  Registered as
    a plugin because a conftest's own collection hooks only apply below its directory.
    """

    root = Path(__file__).resolve().parents[1]

    def pytest_collect_directory(self, path, parent):
        import pytest

        if Path(path).resolve() == self.root:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    config.pluginmanager.register(_RootIsNotAPackage(), "comfyui-stas-root-dir")
    for name, meaning in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")
    # --strict-markers without touching pyproject: a misspelt marker fails collection of its module
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnknownMarkWarning")


def pytest_collection_modifyitems(config, items):
    """A test that takes a harness fixture needing ComfyUI or Chromium gets that marker even where its
    module does not say so (the modules mark what they need explicitly too)."""
    import pytest

    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if uses & {"browser", "frontend_page"}:
            item.add_marker(pytest.mark.browser)
        if uses & {"pk", "comfy_server", "browser", "frontend_page"}:
            item.add_marker(pytest.mark.integration)
