"""Packaging: pyproject.toml against the Comfy Registry's rules (docs.comfy.org/registry/specifications)
and comfy-cli's own validation (`comfy node validate`), the Manager's requirements.txt, LICENSE,
and the README commands that CI runs."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# scripts/testbeds.sh's TESTBED_VERSIONS: the ComfyUI versions setup builds and CI must test, oldest first.
TESTBED_VERSIONS = re.search(r"^TESTBED_VERSIONS=\(([^)]*)\)", (ROOT / "scripts" / "testbeds.sh").read_text(),
                             re.M).group(1).split()
OLDEST_TESTED_COMFYUI = TESTBED_VERSIONS[0]


def test_project_fields_follow_registry_spec():
    p = PYPROJECT["project"]
    # name: < 100 chars, alphanumerics and - _ ., no consecutive specials, starts with a letter
    assert len(p["name"]) < 100 and re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", p["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", p["version"]), "registry versions are X.Y.Z"
    assert p["license"] == {"text": "GPL-3.0-or-later"}
    assert p["urls"]["Repository"].startswith("https://github.com/")
    assert p["description"]


def test_tool_comfy_fields():
    c = PYPROJECT["tool"]["comfy"]
    assert c["PublisherId"] and c["DisplayName"]
    assert c["requires-comfyui"] == f">={OLDEST_TESTED_COMFYUI}"
    # Icon: a raw URL of a file in this repo; PNG within the registry's 800 x 400 limit
    m = re.fullmatch(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/main/(.+\.png)", c["Icon"])
    assert m, c["Icon"]
    icon = (ROOT / m.group(1)).read_bytes()
    assert icon[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", icon[16:24])
    assert w <= 800 and h <= 400


def test_testbed_versions_oldest_first_and_in_readme():
    """The versions setup builds are sorted oldest first (test.sh under CI requires the first and last),
    and README's Compatibility section names each of them."""
    as_tuples = [tuple(int(x) for x in v.split(".")) for v in TESTBED_VERSIONS]
    assert as_tuples == sorted(as_tuples) and len(set(as_tuples)) == len(as_tuples), TESTBED_VERSIONS
    readme = (ROOT / "README.md").read_text()
    for v in TESTBED_VERSIONS:
        assert f"ComfyUI {v}" in readme or f"{v}" in readme.split("## Compatibility", 1)[1], v


def _python_with_comfy_cli() -> str | None:
    for py in (sys.executable, shutil.which("python3")):
        if py and subprocess.run([py, "-c", "import comfy_cli"], capture_output=True).returncode == 0:
            return py
    return None


VALIDATE = """
import json
from comfy_cli.command.custom_nodes.command import validate_node_for_publishing
c = validate_node_for_publishing()
print("CONFIG=" + json.dumps({"name": c.project.name, "version": c.project.version,
      "license": c.project.license.text, "repository": c.project.urls.repository,
      "issues": c.project.urls.issues, "os": c.project.supported_os,
      "comfyui": c.project.supported_comfyui_version, "publisher": c.tool_comfy.publisher_id,
      "display": c.tool_comfy.display_name, "icon": c.tool_comfy.icon}))
"""


def test_comfy_cli_registry_validation():
    """The checks `comfy node validate` runs before publishing (config parsing + ruff security rules)."""
    py = _python_with_comfy_cli()
    if py is None:
        from server_env import skip_missing
        skip_missing("comfy-cli is not installed (pip install comfy-cli; scripts/setup.sh does)")
    r = subprocess.run([py, "-c", VALIDATE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    for bad in ("Warning", "Error", "Security warnings"):
        assert bad not in out, out
    cfg = json.loads(out.split("CONFIG=", 1)[1].splitlines()[0])
    p, c = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert cfg == {"name": p["name"], "version": p["version"], "license": "GPL-3.0-or-later",
                   "repository": p["urls"]["Repository"], "issues": p["urls"]["Issues"], "os": ["OS Independent"],
                   "comfyui": c["requires-comfyui"], "publisher": c["PublisherId"],
                   "display": c["DisplayName"], "icon": c["Icon"]}


def test_requirements_add_nothing_to_comfyui_env():
    """ComfyUI Manager pip-installs requirements.txt: it must not pull torch & co. (ComfyUI has them)."""
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [ln for ln in lines if ln] == []


def test_license_is_full_gpl3():
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in text and "END OF TERMS AND CONDITIONS" in text and len(text) > 30000


def test_ci_runs_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
    for cmd in ("bash scripts/setup.sh", "bash scripts/test.sh"):
        assert cmd in readme, f"README lacks {cmd!r}"
        assert re.search(rf"^{re.escape(cmd)}$", ci, re.M), f".ci/run does not run {cmd!r}"


def test_registry_install_name_in_readme():
    readme = (ROOT / "README.md").read_text()
    assert f"comfy node install {PYPROJECT['project']['name']}" in readme


def test_readme_node_reference_matches_server(comfy_server):
    """README's node tables are exactly what the running nodes declare (regenerate with
    `python3 tools/node_reference.py --comfyui PATH --write` after changing a node)."""
    from tools.node_reference import readme_block, render
    assert readme_block() == render(comfy_server.object_info()), \
        "README node reference is stale: run python3 tools/node_reference.py --comfyui <ComfyUI> --write"


def test_every_node_input_has_a_tooltip(comfy_server):
    """Every input of every node of this pack carries a tooltip, as the server serves it."""
    from tools.node_reference import PACK_MODULE
    ours = {k: v for k, v in comfy_server.object_info().items() if v.get("python_module") == PACK_MODULE}
    assert ours, "the pack's nodes are missing from /object_info"
    missing = [f"{node}.{name}" for node, spec in ours.items()
               for group in ("required", "optional") for name, inp in spec["input"].get(group, {}).items()
               if not (len(inp) > 1 and isinstance(inp[1], dict) and inp[1].get("tooltip"))]
    assert not missing, f"inputs without a tooltip: {missing}"
