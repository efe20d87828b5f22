"""Convert example_workflows/*.json (UI format) into API prompts with the real frontend.

    <ComfyUI's python> tools/export_api_prompts.py --comfyui /path/to/ComfyUI --out DIR [NAME ...]

A real ComfyUI server with this pack starts headless (stas_harness/server.py, state in a temporary
folder), Debian's Chromium loads each workflow in the frontend, and ``app.graphToPrompt()`` turns
it into the API prompt that the Queue button would send; each is written to DIR/<name>.json.
bench/workflows_gpu.py runs these prompts on a GPU machine, which has neither a browser nor a
frontend package, so the conversion is the frontend's own and not a re-implementation.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from _repo import ROOT  # first: the repository root on sys.path (tools/_repo.py)

from stas_harness.server import CHROMIUM, CHROMIUM_ARGS, ComfyServer, FrontendPage, comfy_python_for, ensure_playwright

TO_PROMPT = """
async (wf) => {
  await app.loadGraphData(wf);
  await new Promise(r => setTimeout(r, 1000));
  return (await app.graphToPrompt()).output;
}
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, type=Path, help="ComfyUI checkout with its frontend package installed")
    ap.add_argument("--python", help="python that runs that ComfyUI (default: a venv beside or inside it)")
    ap.add_argument("--out", required=True, type=Path, help="folder for <workflow>.json API prompts")
    ap.add_argument("names", nargs="*", help="workflow names (default: every file in example_workflows)")
    a = ap.parse_args(argv)
    names = a.names or sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json"))
    sync_api = ensure_playwright()
    if sync_api is None or not Path(CHROMIUM).exists():
        raise SystemExit(f"needs the playwright package and Chromium at {CHROMIUM} (bash scripts/setup.sh installs both)")
    a.out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="stas-export-"))
    for name in names:  # empty files under the model names: frontend 1.58's missing-model check then asks no website
        for node in json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())["nodes"]:
            for m in (node.get("properties") or {}).get("models") or []:
                f = base / "models" / m["directory"] / m["name"]
                f.parent.mkdir(parents=True, exist_ok=True)
                f.touch()
    try:
        with ComfyServer(a.comfyui, a.python or comfy_python_for(a.comfyui.resolve()), base_dir=base,
                         test_nodes=False) as srv, sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            for name in names:
                wf = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
                ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
                page = FrontendPage(ctx.new_page(), srv).open()
                prompt = page.evaluate(TO_PROMPT, wf)
                ctx.close()
                if page.errors():
                    raise SystemExit(f"{name}: the frontend reported errors: {page.errors()}")
                (a.out / f"{name}.json").write_text(json.dumps(prompt, indent=1))
                print(f"{name}: {len(prompt)} nodes -> {a.out / (name + '.json')}")
            browser.close()
    finally:  # the placeholder models and the server's state
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
