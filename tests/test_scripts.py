"""README's commands on a machine without ComfyUI: set-up names what it lacks, CI refuses a run
without the oldest and newest ComfyUI, and the first run finds the ComfyUI that set-up built."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from stas_harness.server import newest_testbed
from stas_harness.server import testbeds_record as _record  # not collected as a test

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
    assert "set STAS_TESTBEDS=<where you built them>" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def _no_testbeds_var(tmp_path, **extra):
    """No STAS_TESTBEDS, and a HOME of its own: the record of where set-up built is tmp_path's."""
    env = {k: v for k, v in _env(tmp_path, HOME=str(tmp_path / "home"), **extra).items() if k != "STAS_TESTBEDS"}
    return env


def test_testbeds_built_under_stas_testbeds_are_found_without_it(tmp_path, monkeypatch):
    """Issue 31 item 4: build_testbeds.sh records where it built; first_run.py (newest_testbed) and
    test.sh (find_testbeds) look there when STAS_TESTBEDS is not set again."""
    monkeypatch.delenv("STAS_TESTBEDS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "elsewhere"
    src = _fake_testbed(root, "0.33.0")
    (root / "comfyui-0.33.0" / "venv" / "bin" / "python").chmod(0o755)
    assert newest_testbed() is None  # nothing recorded, nothing in the default folder
    _record().parent.mkdir(parents=True)
    _record().write_text(f"{root}\n")
    assert newest_testbed() == src
    r = subprocess.run(["bash", "-c", "source scripts/testbeds.sh && find_testbeds"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, env=_no_testbeds_var(tmp_path))
    assert r.stdout.split("\t")[:2] == ["comfyui-0.33.0", str(src)], r.stdout + r.stderr
    # STAS_TESTBEDS still wins; a recorded folder that was deleted since is ignored
    monkeypatch.setenv("STAS_TESTBEDS", str(tmp_path / "testbeds"))
    assert newest_testbed() is None
    monkeypatch.delenv("STAS_TESTBEDS")
    _record().write_text(f"{tmp_path / 'gone'}\n")
    assert newest_testbed() is None


def test_build_records_where_it_built(tmp_path):
    """build_testbeds.sh, every testbed already built (fake stamps): it writes the record, and only then."""
    root = tmp_path / "elsewhere"
    source, pins = "index", "torch==0.0.0"
    layer = "torch-" + re.sub("_+", "_", re.sub(r"[^A-Za-z0-9.]", "_", f"{source} {pins}")).rstrip("_")
    (root / layer).mkdir(parents=True)
    (root / layer / ".stamp").write_text(f"{source} {pins}\n")
    for v in ("0.3.64", "0.8.0", "0.33.0"):
        _fake_testbed(root, v)
        (root / f"comfyui-{v}" / "venv" / "bin" / "python").chmod(0o755)
        (root / f"comfyui-{v}" / ".stamp").write_text(f"comfyui {v}; {source} {pins}; {layer}\n")
    env = {**_no_testbeds_var(tmp_path, STAS_TORCH_SOURCE=source, STAS_TORCH_PINS=pins), "STAS_TESTBEDS": str(root)}
    record = tmp_path / "home" / ".cache" / "comfyui-stas" / "testbeds-location"
    r = subprocess.run(["bash", "scripts/build_testbeds.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": ready (") == 3, r.stdout
    assert record.read_text().strip() == str(root)
    # a build that fails writes nothing
    record.unlink()
    archives = tmp_path / "archives"
    archives.mkdir()
    r = subprocess.run(["bash", "scripts/build_testbeds.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**env, "STAS_TESTBEDS": str(tmp_path / "other"), "STAS_COMFYUI_ARCHIVES": str(archives)})
    assert r.returncode != 0 and not record.exists()


def test_serve_refuses_a_taken_port_before_starting_anything(tmp_path):
    """`first_run.py --serve --port P` with P taken: says so and how to pick another, starts no ComfyUI."""
    import socket
    src = _fake_testbed(tmp_path / "testbeds", "0.33.0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "scripts/first_run.py", "--serve", "--port", str(port), "--comfyui", str(src),
                            "--python", sys.executable], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env=_env(tmp_path))
    assert r.returncode != 0
    assert f"port {port} is in use" in r.stderr and "--port 0" in r.stderr, r.stdout + r.stderr
    assert "starting ComfyUI" not in r.stdout
