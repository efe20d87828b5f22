"""The README's node reference, generated from a real ComfyUI server's /object_info so that every
input, default and tooltip in README.md is exactly what the nodes declare (tests/test_packaging.py
checks README against a live server on every testbed).

    python3 tools/node_reference.py --comfyui /path/to/ComfyUI [--python /path/to/python] [--write]

Without --write it prints the Markdown; with --write it replaces the block between the
``<!-- node-reference:start -->`` and ``<!-- node-reference:end -->`` markers of README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"
PACK_MODULE = "custom_nodes.comfyui-stas"


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


def render(object_info: dict) -> str:
    """Markdown for every node of this pack, in registration order."""
    out = []
    for node_id, info in object_info.items():
        if info.get("python_module") != PACK_MODULE:
            continue
        out.append(f"### {info['display_name']} (`{node_id}`)\n\n{info.get('description', '').strip()}\n")
        out.append("| input | type | default | meaning |\n|---|---|---|---|")
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
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def readme_block(text: str | None = None) -> str:
    text = README.read_text() if text is None else text
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout (its main.py folder)")
    ap.add_argument("--python", help="python that runs that ComfyUI (default: a venv beside it, else this one)")
    ap.add_argument("--write", action="store_true", help="update README.md in place")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from server_env import ComfyServer

    with ComfyServer(a.comfyui, a.python, test_nodes=False) as srv:
        md = render(srv.object_info())
    if not a.write:
        print(md)
        return 0
    text = README.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{START}\n{md}{END}{tail}")
    print(f"updated {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
