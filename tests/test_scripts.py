"""README's commands on a machine without ComfyUI: set-up names what it lacks, CI refuses a run
without the oldest and newest ComfyUI, and the first run finds the ComfyUI that set-up built."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stas_harness.server import newest_testbed

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "COMFYUI_PYTHON", "STAS_REQUIRE_ENV")}
    env.update(STAS_TESTBEDS=str(tmp_path / "testbeds"), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _fake_testbed(root: Path, version: str, complete: bool = True) -> Path:
    d = root / f"comfyui-{version}"
    (d / "src").mkdir(parents=True)
    (d / "venv" / "bin").mkdir(parents=True)
    if complete:
        (d / "src" / "main.py").write_text("")
        (d / "venv" / "bin" / "python").write_text("")
    return d / "src"


def test_newest_testbed_by_version_not_by_name(tmp_path, monkeypatch):
    root = tmp_path / "testbeds"
    monkeypatch.setenv("STAS_TESTBEDS", str(root))
    assert newest_testbed() is None
    _fake_testbed(root, "0.3.64")
    newest = _fake_testbed(root, "0.33.0")
    _fake_testbed(root, "0.8.0")
    _fake_testbed(root, "0.40.0", complete=False)  # half-built: no main.py, no python
    assert newest_testbed() == newest


def test_build_names_missing_archives_before_any_work(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    r = subprocess.run(["bash", "scripts/build_testbeds.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=_env(tmp_path, STAS_COMFYUI_ARCHIVES=str(archives)))
    assert r.returncode != 0
    for v in ("0.3.64", "0.8.0", "0.33.0"):
        assert f"ComfyUI-{v}.tar.gz" in r.stderr, r.stderr
    assert not any((tmp_path / "testbeds").glob("torch-*")), "torch was installed before the sources were checked"


def test_ci_fails_without_the_oldest_and_newest_comfyui(tmp_path):
    # '-k' matches no test, so the (empty) pytest runs pass and only the testbed rule can fail the run.
    r = subprocess.run(["bash", "scripts/test.sh", "-p", "no:cacheprovider", "-k", "no_test_has_this_name"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=_env(tmp_path, CI="true"))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "INTEGRATION TESTS SKIPPED" in out
    assert "ComfyUI 0.3.64" in out and "ComfyUI 0.33.0" in out and "did not run" in out, out


def test_outside_ci_a_run_without_testbeds_passes_and_says_so(tmp_path):
    r = subprocess.run(["bash", "scripts/test.sh", "-p", "no:cacheprovider", "-k", "no_test_has_this_name"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=_env(tmp_path, CI="", STAS_REQUIRE_TESTBEDS="0"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "INTEGRATION TESTS SKIPPED" in r.stdout and "scripts/setup.sh" in r.stdout


def test_first_run_without_comfyui_says_how_to_get_one(tmp_path):
    r = subprocess.run([sys.executable, "scripts/first_run.py", "--out", str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=_env(tmp_path))
    assert r.returncode == 2
    assert "scripts/setup.sh" in r.stderr and str(tmp_path / "testbeds") in r.stderr
    assert not (tmp_path / "out").exists()
