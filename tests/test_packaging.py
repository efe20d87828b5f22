"""Packaging: pyproject.toml against the Comfy Registry's rules (docs.comfy.org/registry/specifications)
and comfy-cli's own validation (`comfy node validate`), the registry's publish workflow, the Manager's
requirements.txt, LICENSE, and the documentation: README and docs/ against each other, the code and
a live server."""
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
README = (ROOT / "README.md").read_text()
# The pages README's sections moved to, each linked from the README.
DOC_PAGES = ("method.md", "models.md", "nodes.md", "visualizer.md", "compatibility.md", "troubleshooting.md",
             "performance.md", "gpu_workflow_run.md", "tests.md")
PUBLISH_WORKFLOW = ROOT / ".github" / "workflows" / "publish_action.yml"
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


def test_testbed_versions_oldest_first_and_in_docs():
    """The versions setup builds are sorted oldest first (test.sh under CI requires the first and last),
    and docs/compatibility.md and README's Limits name each of them."""
    as_tuples = [tuple(int(x) for x in v.split(".")) for v in TESTBED_VERSIONS]
    assert as_tuples == sorted(as_tuples) and len(set(as_tuples)) == len(as_tuples), TESTBED_VERSIONS
    compat = (ROOT / "docs" / "compatibility.md").read_text()
    limits = README.split("## Limits", 1)[1].split("\n## ", 1)[0]
    for v in TESTBED_VERSIONS:
        assert v in compat.split("- **Models**", 1)[0], f"docs/compatibility.md's ComfyUI entry lacks {v}"
        assert v in limits, f"README's Limits lack ComfyUI {v}"


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
        from stas_harness.server import skip_missing
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


def test_ci_runs_documented_commands():
    """The two commands docs/tests.md documents (and README's Tests names) are what .ci/run runs."""
    tests_md = (ROOT / "docs" / "tests.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
    for cmd in ("bash scripts/setup.sh", "bash scripts/test.sh"):
        assert re.search(rf"^{re.escape(cmd)}$", tests_md, re.M), f"docs/tests.md lacks the line {cmd!r}"
        assert cmd in README.split("## Tests", 1)[1], f"README's Tests section lacks {cmd!r}"
        assert re.search(rf"^{re.escape(cmd)}$", ci, re.M), f".ci/run does not run {cmd!r}"


def test_registry_install_name_in_readme():
    assert f"comfy node install {PYPROJECT['project']['name']}" in README


def test_repository_url_agrees_everywhere():
    """[project.urls], README's git install line, the registry icon's URL and the publish workflow's
    owner guard all name one GitHub repository."""
    urls = PYPROJECT["project"]["urls"]
    repo = urls["Repository"]
    m = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+)", repo)
    assert m, repo
    owner, name = m.groups()
    assert urls["Issues"] == f"{repo}/issues"
    assert urls["Documentation"] in (repo, f"{repo}#readme") or urls["Documentation"].startswith(f"{repo}/")
    clones = re.findall(r"git clone (\S+)", README)
    assert clones == [repo], f"README's git clone lines {clones} differ from [project.urls] Repository {repo}"
    assert f"cd {name}" in README or f"{name}/requirements.txt" in README
    assert PYPROJECT["tool"]["comfy"]["Icon"].startswith(f"https://raw.githubusercontent.com/{owner}/{name}/")
    assert f"github.repository_owner == '{owner}'" in PUBLISH_WORKFLOW.read_text()


def test_publish_workflow():
    """.github/workflows/publish_action.yml publishes with the registry's action on a change of
    pyproject.toml on main (and by hand), with the registry key from the repository's secrets."""
    try:
        import yaml
    except ImportError:
        from stas_harness.server import skip_missing
        skip_missing("pyyaml is not installed (pip install -r requirements-dev.txt; scripts/setup.sh does)")
    wf = yaml.safe_load(PUBLISH_WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "workflow_dispatch" in on
    assert on["push"]["branches"] == ["main"]
    assert "pyproject.toml" in on["push"]["paths"]
    steps = [st for job in wf["jobs"].values() for st in job["steps"]]
    publish = [st for st in steps if str(st.get("uses", "")).startswith("Comfy-Org/publish-node-action@")]
    assert len(publish) == 1, steps
    assert re.fullmatch(r"\$\{\{\s*secrets\.REGISTRY_ACCESS_TOKEN\s*\}\}",
                        publish[0]["with"]["personal_access_token"])
    checkout = [i for i, st in enumerate(steps) if str(st.get("uses", "")).startswith("actions/checkout@")]
    assert checkout and checkout[0] < steps.index(publish[0]), "the code must be checked out before publishing"


# -- documentation ----------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(md: str) -> set[str]:
    out, seen, fenced = set(), {}, False
    for line in md.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_readme_is_short_and_every_moved_page_one_click_away():
    assert len(README.encode()) < 10_000, f"README.md is {len(README.encode())} bytes"
    links = set(re.findall(r"\]\((docs/[^)#\s]+)", README))
    for page in DOC_PAGES:
        assert f"docs/{page}" in links, f"README does not link docs/{page}"
    assert "<!-- node-reference:start -->" not in README, "the node reference lives in docs/nodes.md"


def test_documentation_links_resolve():
    """Every relative link and image of README and its docs/ pages names an existing file, and an
    anchor into a Markdown file names one of its headings."""
    bad = []
    for md in [ROOT / "README.md", *(ROOT / "docs" / p for p in DOC_PAGES)]:
        prose = re.sub(r"```.*?```|`[^`\n]*`", "", md.read_text(), flags=re.S)  # no links in code
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                bad.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                bad.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, bad


def test_method_lives_in_the_repo():
    """The method is docs/method.md, never a file outside the repository that users do not have."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    outside = [p.name for p in pages if "STAS-SPEC" in p.read_text()]
    assert not outside, f"pages pointing at STAS-SPEC.md instead of docs/method.md: {outside}"
    method = (ROOT / "docs" / "method.md").read_text()
    for must in ("sign(0)", "arXiv:2603.17825", "first latent frame", "alpha * M", "start_percent"):
        assert must in method, f"docs/method.md lacks {must!r}"


def _table_rows(md: str, section: str) -> list[str]:
    body = md.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in body.splitlines() if ln.startswith("| ") and not ln.startswith("| message starts with")]


def test_readme_troubleshooting_rows_are_docs_rows():
    """README's five troubleshooting rows are docs/troubleshooting.md's (tools/node_reference.py's
    README_ROWS), word for word; tests/test_errors.py checks those rows against the errors raised."""
    from tools.node_reference import readme_rows, readme_troubleshooting
    rows = _table_rows(README, "Troubleshooting")
    assert rows == readme_rows() and len(rows) == 5, rows
    assert rows == readme_troubleshooting(), \
        "README's troubleshooting rows are stale: run python3 tools/node_reference.py --comfyui <ComfyUI> --write"


def test_readme_cites_the_paper():
    assert "Li, Liao, Cheng, Zheng, Xie" in README
    assert "https://arxiv.org/abs/2603.17825" in README


def test_help_pages_cover_the_node_reference():
    """web/docs/ holds one help page per node of docs/nodes.md, and nothing else (offline check;
    the content is checked against a live server below)."""
    from tools.node_reference import nodes_block, web_pages
    ids = re.findall(r"^### .* \(`(\w+)`\)$", nodes_block(), re.M)
    assert ids and sorted(web_pages()) == sorted(ids)
    # the frontend fetches /extensions/<pack>/docs/<NodeId>.md from the pack's WEB_DIRECTORY
    assert re.search(r"^WEB_DIRECTORY = [\"']\./web[\"']$", (ROOT / "__init__.py").read_text(), re.M)


def test_node_reference_matches_server(comfy_server):
    """docs/nodes.md's tables and the frontend's help pages (web/docs/<NodeId>.md, as the server
    serves them to the frontend) are exactly what the running nodes declare (regenerate with
    `python3 tools/node_reference.py --comfyui PATH --write` after changing a node)."""
    from tools.node_reference import help_pages, nodes_block, render, web_pages
    stale = "run python3 tools/node_reference.py --comfyui <ComfyUI> --write"
    info = comfy_server.object_info()
    assert nodes_block() == render(info), f"docs/nodes.md's node reference is stale: {stale}"
    pages = help_pages(info)
    assert web_pages() == pages, f"web/docs/ help pages are stale: {stale}"
    for node_id, page in pages.items():
        served = comfy_server._request(f"/extensions/comfyui-stas/docs/{node_id}.md").decode()
        assert served == page, node_id


def test_readme_settings_match_server(comfy_server):
    """README's Settings table names real STAS Model Patch inputs, with their real defaults."""
    from tools.node_reference import _default
    inputs = comfy_server.object_info()["STASModelPatch"]["input"]
    rows = [ln for ln in _table_rows(README, "Settings") if ln.startswith("| `")]
    checked = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        if len(cells) != 3:
            continue  # the per-model table
        name, default = cells[0].strip("`"), cells[1]
        if default == "(optional)":
            assert name in inputs.get("optional", {}), name
        else:
            assert name in inputs["required"], name
            assert default == _default(inputs["required"][name]), (name, default)
        checked.add(name)
    assert checked == set(inputs["required"]) - {"model"} | set(inputs.get("optional", {})), checked


def test_every_node_input_has_a_tooltip(comfy_server):
    """Every input of every node of this pack carries a tooltip, as the server serves it."""
    from tools.node_reference import PACK_MODULE
    ours = {k: v for k, v in comfy_server.object_info().items() if v.get("python_module") == PACK_MODULE}
    assert ours, "the pack's nodes are missing from /object_info"
    missing = [f"{node}.{name}" for node, spec in ours.items()
               for group in ("required", "optional") for name, inp in spec["input"].get(group, {}).items()
               if not (len(inp) > 1 and isinstance(inp[1], dict) and inp[1].get("tooltip"))]
    assert not missing, f"inputs without a tooltip: {missing}"
