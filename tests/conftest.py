import sys
from pathlib import Path

# Unit tests import the pure-torch core as a top-level package; integration tests reach
# the pack's own modules through the module ComfyUI registered (see comfy_env.pack_module).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Session fixtures comfy_server / browser / frontend_page (a real ComfyUI server and headless
# Chromium), registered once so every test module shares one server (see server_env.py).
pytest_plugins = ["server_env"]


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
