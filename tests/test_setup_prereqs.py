"""scripts/setup.sh and build_testbeds.sh on a machine that lacks something: they say what before installing
anything, and a CPU-only machine gets no CUDA build of torch."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# ComfyUI plays no part here: run once, in scripts/test.sh's unit-test run, not again on every testbed.
pytestmark = pytest.mark.skipif(bool(os.environ.get("COMFYUI_PATH")), reason="script tests run in the unit-test run")


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "COMFYUI_PYTHON", "STAS_REQUIRE_ENV")}
    env.update(STAS_TESTBEDS=str(tmp_path / "testbeds"), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def test_setup_checks_prerequisites_before_installing_anything(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=_env(tmp_path, STAS_COMFYUI_ARCHIVES=str(archives)))
    assert r.returncode == 1, r.stdout + r.stderr
    for v in ("0.3.64", "0.8.0", "0.33.0"):
        assert f"ComfyUI-{v}.tar.gz" in r.stderr, r.stderr
    assert "nothing was installed" in r.stderr
    assert "== python test dependencies" not in r.stdout and "chromium" not in r.stdout.lower()
    assert not (tmp_path / "testbeds").exists()

    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=_env(tmp_path, STAS_COMFYUI_ARCHIVES=str(archives), STAS_MIN_FREE_GB="999999999"))
    assert r.returncode == 1 and "nothing was installed" in r.stderr


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA GPU")
def test_cpu_only_machine_without_a_cpu_torch_stops_before_installing(tmp_path):
    comfy = os.environ.get("STAS_COMFYUI_ARCHIVES") or str(ROOT.parent / "shared" / "comfyui")
    if not Path(comfy, "ComfyUI-0.33.0.tar.gz").exists():
        pytest.skip(f"no ComfyUI-0.33.0.tar.gz in {comfy}")
    # No CPU index, and pip sees PyPI only (no find-links, no config): PyPI has CUDA builds of torch only.
    env = _env(tmp_path, STAS_COMFYUI_ARCHIVES=comfy, STAS_TORCH_INDEX="http://127.0.0.1:9/whl/cpu",
               PIP_CONFIG_FILE=os.devnull)
    env = {k: v for k, v in env.items() if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL")}
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "only CUDA builds of torch" in r.stderr and "STAS_TORCH_INDEX" in r.stderr, r.stderr
    assert "nothing was installed" in r.stderr and "== python test dependencies" not in r.stdout
    assert not (tmp_path / "testbeds").exists()

    r = subprocess.run(["bash", "scripts/build_testbeds.sh", "--check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**env, "STAS_ALLOW_CUDA_TORCH": "1"})
    assert r.returncode == 0 and "torch for the testbeds: pypi" in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is missing (set-up's own check covers that)")
def test_setup_without_github_and_archives_stops_before_installing(tmp_path):
    """Issue 31 item 1: no archives and ComfyUI's repository out of reach (here a closed local port): set-up
    says so and how to go on offline, having installed nothing; a repository without a version's tag too."""
    env = {k: v for k, v in _env(tmp_path).items() if k not in ("STAS_COMFYUI_ARCHIVES", "STAS_BUILD_TESTBEDS")}
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**env, "STAS_COMFYUI_REPO": "http://127.0.0.1:9/ComfyUI.git", "STAS_GIT_TIMEOUT": "20"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "http://127.0.0.1:9/ComfyUI.git cannot be reached" in r.stderr, r.stderr
    assert "ComfyUI 0.3.64 0.8.0 0.33.0 must be cloned" in r.stderr, r.stderr
    assert "STAS_COMFYUI_ARCHIVES=<folder of ComfyUI-<version>.tar.gz>" in r.stderr
    assert "nothing was installed" in r.stderr
    assert "== python test dependencies" not in r.stdout and "chromium" not in r.stdout.lower() \
        and "torch" not in r.stdout, r.stdout
    assert not (tmp_path / "testbeds").exists()

    # reachable, but without the tag of one version to build
    repo = tmp_path / "ComfyUI"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    for tag in ("v0.3.64", "v0.8.0"):
        subprocess.run([*git, "tag", tag], check=True)
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**env, "STAS_COMFYUI_REPO": str(repo)})
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{repo} has no tag for ComfyUI 0.33.0 " in r.stderr, r.stderr
    assert "nothing was installed" in r.stderr and "== python test dependencies" not in r.stdout
    assert not (tmp_path / "testbeds").exists()
