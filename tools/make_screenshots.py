"""Write the documentation's screenshots (docs/screenshots/) in the real ComfyUI frontend.

    python3 tools/make_screenshots.py --comfyui /path/to/ComfyUI [--python PY] [--out docs/screenshots] [--cards-only]

The tests never write into the working tree; this is the one command that renews the README's
and docs/'s figures. It starts that ComfyUI headless on the CPU with this pack and the test-only
nodes (all state in a temporary folder), drives Debian's Chromium through Playwright, and runs the
same page as tests/test_web_visualizer.py (stas_harness/visualizer_page.py):

- ma_visualizer_chart.png, ma_visualizer_node.png, ma_visualizer_chart_zoomed.png,
  ma_visualizer_summary.png: the MA Visualizer's in-node chart (LiteGraph renderer), hovered,
  zoomed to a latent frame, with its summary open;
- ma_visualizer_chart_vue.png, ma_visualizer_summary_vue.png: the same in the Vue node renderer
  (frontends that have one able to show the chart);
- ma_visualizer_{profile,heatmaps,hierarchy,steering}_output.png: its IMAGE outputs;
- template_cards.png: Browse Templates, section comfyui-stas (sorted A -> Z where the frontend can), in a
  window tall enough for every card; ``--cards-only`` writes just this one (after tools/build_workflows.py).

Use the newest tested ComfyUI (README's screenshots come from frontend 1.49). The template
thumbnails in example_workflows/ are written by tools/build_workflows.py.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from _repo import ROOT  # first: the repository root on sys.path (tools/_repo.py)

from stas_harness.server import CHROMIUM, CHROMIUM_ARGS, FrontendPage, comfy_python_for, ensure_playwright
from stas_harness.visualizer_page import (NoVueRenderer, VisualizerServer, cards_screenshot, exercise_chart,
                                          frontend_version, load_and_run, open_page, open_template_cards,
                                          sort_templates_a_to_z)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH"),
                    help="ComfyUI folder (the one with main.py); default $COMFYUI_PATH")
    ap.add_argument("--python", help="python that runs that ComfyUI (default: $COMFYUI_PYTHON or its venv)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="default docs/screenshots")
    ap.add_argument("--cards-only", action="store_true", help="only template_cards.png (after a layout change)")
    a = ap.parse_args(argv)
    if a.comfyui is None or not (Path(a.comfyui) / "main.py").exists():
        ap.error("give --comfyui /path/to/ComfyUI (the folder with main.py) or set COMFYUI_PATH")
    src = Path(a.comfyui).resolve()
    python = a.python or comfy_python_for(src)
    a.out.mkdir(parents=True, exist_ok=True)
    sync_api = ensure_playwright()
    srv = VisualizerServer(src, python)
    srv.start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            for renderer in () if a.cards_only else ("litegraph", "vue"):
                try:
                    fp = open_page(srv, browser, vue=renderer == "vue")
                except NoVueRenderer:
                    print(f"{renderer}: this frontend has none, skipped")
                    continue
                version = frontend_version(fp)
                if renderer == "vue" and version[:2] <= (1, 27):
                    print(f"{renderer}: frontend {version} draws no extension DOM widget there, skipped")
                    fp.ctx.close()
                    continue
                entry = load_and_run(srv, fp)
                exercise_chart(srv, fp, entry, a.out, renderer)
                print(f"frontend {'.'.join(map(str, version))} ({renderer}): chart screenshots in {a.out}")
                fp.ctx.close()
            # tall enough for the dialog to show every card (eleven: four rows)
            ctx = browser.new_context(viewport={"width": 1500, "height": 2200}, device_scale_factor=1)
            fp = FrontendPage(ctx.new_page(), srv).open()
            fp.ctx = ctx
            sorted_a_z = sort_templates_a_to_z(fp)
            cards = open_template_cards(fp)
            cards_screenshot(fp, cards, a.out / "template_cards.png")
            print(f"template cards ({len(cards)}, {'A -> Z' if sorted_a_z else 'server order'}): "
                  f"{a.out / 'template_cards.png'}")
            fp.ctx.close()
            browser.close()
    finally:
        srv.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
