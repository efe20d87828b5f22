"""The node reference, generated from a real ComfyUI server's /object_info so that every input,
default and tooltip in the docs is exactly what the nodes declare. One rendering, two places:

- docs/nodes.md, between the ``<!-- node-reference:start -->`` and ``<!-- node-reference:end -->``
  markers (linked from the README);
- web/docs/<NodeId>.md, one page per node: ComfyUI's frontend fetches
  ``/extensions/<pack>/docs/<NodeId>.md`` from the pack's WEB_DIRECTORY and shows it as the node's help.

tests/test_packaging.py checks both against a live server on every testbed. --write also copies
README's troubleshooting rows from docs/troubleshooting.md (README_ROWS picks them; the messages
themselves are checked against the errors the pack raises by tests/test_errors.py).

    python3 tools/node_reference.py --comfyui /path/to/ComfyUI [--python /path/to/python] [--write]

Without --write it prints docs/nodes.md's block; with --write it rewrites that block and every
web/docs/<NodeId>.md (and deletes pages of nodes that no longer exist).
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODES_MD = ROOT / "docs" / "nodes.md"
WEB_DOCS = ROOT / "web" / "docs"
START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"
README = ROOT / "README.md"
TROUBLESHOOTING_MD = ROOT / "docs" / "troubleshooting.md"
# The rows of docs/troubleshooting.md README shows (a row whose first cell holds the key), in this order.
README_ROWS = ("does not support <X> models", "blocks: block N does not exist",
               "STAS Model Patch: the sampler got a latent", "will steer nothing in this run",
               "no channel reached the threshold")
PACK_MODULE = "custom_nodes.comfyui-stas"
URLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type(spec) -> str:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    options = kind if isinstance(kind, list) else opts.get("options") if kind == "COMBO" else None
    if options is not None:
        return "one of " + ", ".join(f"`{o}`" for o in options)
    rng = ""
    if kind in ("INT", "FLOAT") and "min" in opts and "max" in opts:
        rng = f" {opts['min']:g}..{opts['max']:g}" if kind == "FLOAT" else f" {opts['min']}..{opts['max']}"
    return f"{kind}{rng}"


def _default(spec) -> str:
    opts = spec[1] if len(spec) > 1 else {}
    if "default" not in opts:
        return "(connect)" if isinstance(spec[0], str) and spec[0].isupper() and spec[0] not in (
            "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") else ""
    d = opts["default"]
    return f"`{str(d).lower() if isinstance(d, bool) else d}`"


def pack_nodes(object_info: dict) -> list[tuple[str, dict]]:
    """This pack's nodes, in registration order."""
    return [(k, v) for k, v in object_info.items() if v.get("python_module") == PACK_MODULE]


def render_node(node_id: str, info: dict, level: int = 3) -> str:
    """One node: heading, description, input and output tables."""
    out = [f"{'#' * level} {info['display_name']} (`{node_id}`)\n\n{info.get('description', '').strip()}\n",
           "| input | type | default | meaning |\n|---|---|---|---|"]
    inputs = info["input"]
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, list(inputs.get(section, {}))):
            spec = inputs[section][name]
            label = f"`{name}`" + (" (optional)" if section == "optional" else "")
            if name.endswith("_name") and _type(spec).startswith("one of"):
                typ = "file name"  # a folder listing: differs per install
            else:
                typ = _type(spec)
            out.append(f"| {label} | {_cell(typ)} | {_cell(_default(spec))} | {_cell(spec[1].get('tooltip', ''))} |")
    out.append("\n| output | type | meaning |\n|---|---|---|")
    tips = info.get("output_tooltips") or [""] * len(info["output"])
    for name, typ, tip in zip(info["output_name"], info["output"], tips):
        out.append(f"| `{name}` | {_cell(typ)} | {_cell(tip or '')} |")
    return "\n".join(out) + "\n"


def render(object_info: dict) -> str:
    """docs/nodes.md's block: every node of this pack, in registration order."""
    return "\n".join(render_node(k, v) for k, v in pack_nodes(object_info)).rstrip() + "\n"


def help_pages(object_info: dict) -> dict[str, str]:
    """web/docs/<NodeId>.md for every node of this pack: the same section, as a page of its own."""
    more = (f"\nMore: [documentation]({URLS['Documentation']}), "
            f"[troubleshooting]({URLS['Repository']}/blob/main/docs/troubleshooting.md).\n")
    return {k: render_node(k, v, level=1) + more for k, v in pack_nodes(object_info)}


def nodes_block(text: str | None = None) -> str:
    """The generated block as docs/nodes.md holds it now."""
    text = NODES_MD.read_text() if text is None else text
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def web_pages() -> dict[str, str]:
    """The help pages as web/docs holds them now, by node id."""
    return {f.stem: f.read_text() for f in sorted(WEB_DOCS.glob("*.md"))}


def readme_troubleshooting() -> list[str]:
    """README's troubleshooting rows, as docs/troubleshooting.md words them."""
    rows = [ln for ln in TROUBLESHOOTING_MD.read_text().splitlines() if ln.startswith("| ")]
    out = []
    for key in README_ROWS:
        found = [ln for ln in rows if key in ln.split(" | ", 1)[0]]
        if len(found) != 1:
            raise SystemExit(f"README_ROWS key {key!r} matches {len(found)} rows of {TROUBLESHOOTING_MD}")
        out.append(found[0])
    return out


def readme_rows(text: str | None = None) -> list[str]:
    """The rows of README's troubleshooting table now."""
    body = (README.read_text() if text is None else text).split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in body.splitlines() if ln.startswith("| ") and not ln.startswith("| message starts with")]


def write_readme_troubleshooting() -> None:
    text = README.read_text()
    old = readme_rows(text)
    new = readme_troubleshooting()
    if old != new:
        block = "\n".join(old)
        assert text.count(block) == 1, "README's troubleshooting rows are not one block"
        README.write_text(text.replace(block, "\n".join(new)))
        print(f"updated {README}'s troubleshooting rows")


def write(object_info: dict) -> None:
    text = NODES_MD.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    NODES_MD.write_text(f"{head}{START}\n{render(object_info)}{END}{tail}")
    print(f"updated {NODES_MD}")
    pages = help_pages(object_info)
    WEB_DOCS.mkdir(parents=True, exist_ok=True)
    for stale in set(web_pages()) - set(pages):
        (WEB_DOCS / f"{stale}.md").unlink()
        print(f"removed {WEB_DOCS / stale}.md")
    for node_id, page in pages.items():
        (WEB_DOCS / f"{node_id}.md").write_text(page)
    print(f"wrote {len(pages)} help pages to {WEB_DOCS}")
    write_readme_troubleshooting()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout (its main.py folder)")
    ap.add_argument("--python", help="python that runs that ComfyUI (default: a venv beside it, else this one)")
    ap.add_argument("--write", action="store_true", help="update docs/nodes.md and web/docs/ in place")
    a = ap.parse_args()
    import _repo  # noqa: F401  (run as a script: the repository root on sys.path, for stas_harness)
    from stas_harness.server import ComfyServer

    with ComfyServer(a.comfyui, a.python, test_nodes=False) as srv:
        info = srv.object_info()
        if not pack_nodes(info):  # the pack failed to import: never write an empty reference
            sys.exit(f"this pack's nodes are missing from /object_info; ComfyUI's log:\n{srv.log_tail()}")
    if a.write:
        write(info)
    else:
        print(render(info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
