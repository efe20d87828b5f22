"""The MA Visualizer's page in the real frontend, shared by tests/test_web_visualizer.py (which
checks it, screenshots in its tmp_path) and tools/make_screenshots.py (which writes the README's
and docs/'s screenshots): a server with this pack, a test node that plants known massive
activations and a tiny Wan file; the graph; loading, running and framing the visualizer node;
the template browser's comfyui-stas cards."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from stas_harness.server import PACK_DIR, ComfyServer, FrontendPage

VIS_NODES = PACK_DIR / "tests" / "visualizer_test_nodes"
VIS_ID = "10"
T_LAT, H_TOK, W_TOK = 6, 6, 8  # latent frames and token grid of the graph below (96x128 px, 21 frames)


WRITE_TINY_WAN = """
import sys
from safetensors.torch import save_file
from stas_harness.comfy_env import import_comfyui
from stas_harness.models import random_state_dict, wan_module
import_comfyui(sys.argv[1], cpu=True)
save_file(random_state_dict(wan_module()), sys.argv[2])
"""


class VisualizerServer(ComfyServer):
    """The harness's server plus the plant node and a tiny Wan file for UNETLoader."""

    def _prepare_base(self) -> None:
        super()._prepare_base()
        link = self.base_dir / "custom_nodes" / "stas_visualizer_test_nodes"
        if not link.exists():
            link.symlink_to(VIS_NODES, target_is_directory=True)
        d = self.models_dir / "diffusion_models"
        d.mkdir(parents=True, exist_ok=True)
        path = d / "stas_tiny_wan.safetensors"
        if not path.exists():  # ComfyUI's own WanModel class gives the real key layout; in the server's python
            subprocess.run([self.python, "-c", WRITE_TINY_WAN, str(self.src), str(path)], check=True,
                           cwd=str(PACK_DIR), env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
                           capture_output=True, timeout=300)


class NoVueRenderer(Exception):
    """The frontend has no Vue node renderer (the test skips, the screenshot tool moves on)."""


def frontend_version(fp: FrontendPage) -> tuple:
    v = fp.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || '0.0.0'")
    return tuple(int(x) for x in v.split(".")[:3])


def graph() -> dict:
    """API-format prompt: the visualizer is node 10."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "stas_tiny_wan.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "STASTestTextEncoder", "inputs": {"kind": "wan"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox running through snow", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["2", 0]}},
        "5": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": W_TOK * 16, "height": H_TOK * 16, "length": 4 * T_LAT - 3, "batch_size": 1}},
        "6": {"class_type": "STASTestPlantMA", "inputs": {"model": ["1", 0], "latent": ["5", 0], "block": 2}},
        # the recorder sits before STAS: it records the unsteered stream, and STAS reports before/after
        "8": {"class_type": "STASMARecorder",
              "inputs": {"model": ["6", 0], "blocks": "1-3", "steps": "all", "record": "cond", "channels": "auto",
                         "top_k": 4, "token_stride": 0, "max_memory_mb": 256}},
        "7": {"class_type": "STASModelPatch",
              "inputs": {"model": ["8", 0], "alpha": 1.0, "blend": 1.0, "blocks": "2", "channels": "auto",
                         "threshold": 50.0, "top_k": 4, "start_percent": 0.0, "end_percent": 0.4, "apply_to": "cond"}},
        "9": {"class_type": "KSampler",
              "inputs": {"model": ["7", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
                         "seed": 1, "steps": 4, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
                         "denoise": 1.0}},
        VIS_ID: {"class_type": "STASMAVisualizer",
                 "inputs": {"recording": ["8", 1], "latent": ["9", 0], "block": 2, "step": 0, "sample": 0,
                            "chunk": "cond", "channel": "max", "threshold": 50.0, "log_scale": False,
                            "export": False, "filename_prefix": "stas/ma_recording"}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": [VIS_ID, 0]}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": [VIS_ID, 1]}},
        "13": {"class_type": "PreviewImage", "inputs": {"images": [VIS_ID, 2]}},
        "14": {"class_type": "PreviewImage", "inputs": {"images": [VIS_ID, 3]}},
    }


def pack_errors(fp: FrontendPage) -> list[str]:
    """Console errors that come from this pack, and every uncaught exception of the page
    (an exception thrown in the chart's event handlers need not name the pack)."""
    keys = ("stas", "comfyui-stas", "stas_visualizer")
    return [e for e in fp.console_errors if any(k in e.lower() for k in keys)] + list(fp.page_errors)


def open_page(srv, browser, vue: bool) -> FrontendPage:
    ctx = browser.new_context(viewport={"width": 1500, "height": 1150}, device_scale_factor=1)
    fp = FrontendPage(ctx.new_page(), srv).open()
    fp.ctx = ctx
    if vue:
        has = fp.evaluate("""async () => {
            const s = window.app.extensionManager?.setting;
            if (!s) return false;
            await s.set('Comfy.VueNodes.Enabled', true);
            return s.get('Comfy.VueNodes.Enabled') === true;
        }""")
        if not has:
            ctx.close()
            raise NoVueRenderer("this frontend has no Vue node renderer setting")
    return fp


def load_and_run(srv, fp: FrontendPage) -> dict:
    fp.evaluate("async (g) => { await window.app.loadApiJson(g, 'stas-visualizer-test'); }", graph())
    fp.wait_for_function(f"() => window.app.graph.getNodeById({VIS_ID})?.stasChart !== undefined", timeout=90_000)  # the first page of a run on a busy 2-core machine
    client_id = fp.evaluate("() => window.app.api.clientId")
    status, body = srv.post_json("/prompt", {"prompt": graph(), "client_id": client_id})
    assert status == 200, body
    entry = srv.wait(body["prompt_id"], timeout=300)
    fp.wait_for_function(f"() => window.app.graph.getNodeById({VIS_ID}).stasChart.data !== null", timeout=60_000)
    return entry


def frame_node(fp: FrontendPage) -> dict:
    """Move the visualizer node away from the others and into view (right of the sidebar);
    returns its screen rectangle (title bar included) for screenshots."""
    rect = fp.evaluate(f"""() => {{
        const app = window.app, node = app.graph.getNodeById({VIS_ID});
        node.pos = [3000, 3000];
        node.setSize([900, Math.max(node.size[1], 430)]);
        const ds = app.canvas.ds;
        ds.scale = 1; ds.offset = [-3000 + 120, -3000 + 110];
        app.graph.setDirtyCanvas(true, true);
        app.canvas.draw?.(true, true);
        return {{x: 120 - 6, y: 110 - 36, width: node.size[0] + 12, height: node.size[1] + 44}};
    }}""")
    time.sleep(1.0)
    # Frontend 1.35's Vue renderer keeps a node where its layout store has it, whatever node.pos
    # says: if the chart is not where the node was moved, pan the canvas to wherever it is.
    fp.evaluate(f"""() => {{
        const app = window.app, r = app.graph.getNodeById({VIS_ID}).stasChart.root.getBoundingClientRect();
        if (Math.abs(r.x - 120) < 60 && r.y > 0 && r.y < 400) return;
        const ds = app.canvas.ds;
        ds.offset = [ds.offset[0] + (120 - r.x) / ds.scale, ds.offset[1] + (150 - r.y) / ds.scale];
        app.graph.setDirtyCanvas(true, true);
        app.canvas.draw?.(true, true);
    }}""")
    time.sleep(1.0)
    return rect




def exercise_chart(srv, fp: FrontendPage, entry: dict, shots: Path, renderer: str) -> dict:
    """Frame the visualizer node, hover latent frame 2, click to zoom, zoom back out, open the
    summary; screenshots of each state go to ``shots``. Returns what the page showed, for the test
    to check (the screenshot tool ignores it)."""
    seen = {}
    shots.mkdir(parents=True, exist_ok=True)
    tag = "" if renderer == "litegraph" else "_vue"
    frame_node(fp)
    top = fp.evaluate(NODE_RECT_JS)["y"]
    if top < 80:  # tall nodes (1.49 draws taller widgets): bring the title into view
        fp.evaluate("""(dy) => {
            const ds = window.app.canvas.ds;
            ds.offset = [ds.offset[0], ds.offset[1] + dy / ds.scale];
            window.app.graph.setDirtyCanvas(true, true);
            window.app.canvas.draw?.(true, true);
        }""", 90 - top)
        time.sleep(1.0)
    node_rect = seen["node_rect"] = screen_clip(fp, fp.evaluate(NODE_RECT_JS), 6)
    canvas = fp.locator(".stas-chart-canvas").first
    canvas.wait_for(state="visible", timeout=30_000)
    box = seen["canvas_box"] = canvas.bounding_box()
    lay = fp.evaluate(f"() => window.app.graph.getNodeById({VIS_ID}).stasChart.layout()")
    sx = box["width"] / lay["w"]  # CSS px of the chart per screen px (the graph may be zoomed)
    x = box["x"] + (lay["left"] + (2.5 / T_LAT) * (lay["w"] - lay["left"] - lay["right"])) * sx
    y = box["y"] + box["height"] / 2
    fp.mouse.move(x, y)
    fp.mouse.move(x + 1, y)
    seen["tip"] = fp.locator(".stas-chart-tip").first.text_content()
    shot_box = fp.locator(".stas-chart").first.bounding_box()
    clip = {"x": max(0, shot_box["x"] - 4), "y": max(0, shot_box["y"] - 4),
            "width": shot_box["width"] + 8, "height": shot_box["height"] + 8}
    fp.screenshot(path=str(shots / f"ma_visualizer_chart{tag}.png"), clip=clip)
    if renderer == "litegraph":
        fp.screenshot(path=str(shots / "ma_visualizer_node.png"), clip=node_rect)
    fp.mouse.click(x, y)
    seen["zoomed_frame"] = fp.evaluate(f"() => window.app.graph.getNodeById({VIS_ID}).stasChart.frame")
    fp.mouse.move(x + 3, y)
    seen["zoomed_tip"] = fp.locator(".stas-chart-tip").first.text_content()
    if renderer == "litegraph":
        fp.screenshot(path=str(shots / "ma_visualizer_chart_zoomed.png"), clip=clip)
    fp.locator(".stas-frame-select").first.select_option("all")
    seen["frame_after_select"] = fp.evaluate(f"() => window.app.graph.getNodeById({VIS_ID}).stasChart.frame")
    seen["summary"] = open_summary(fp, shots / f"ma_visualizer_summary{tag}.png")
    if renderer == "litegraph":
        # the IMAGE outputs as ComfyUI shows them
        for node, name in (("11", "profile"), ("12", "heatmaps"), ("13", "hierarchy"), ("14", "steering")):
            files = srv.output_files(entry, node)
            seen[f"{name}_files"] = len(files)
            if files:
                (shots / f"ma_visualizer_{name}_output.png").write_bytes(files[0].read_bytes())
    return seen


NODE_RECT_JS = f"""() => {{
    const app = window.app, node = app.graph.getNodeById({VIS_ID});
    const vueOn = window.app.extensionManager?.setting?.get?.('Comfy.VueNodes.Enabled') === true;
    const vue = vueOn && document.querySelector('[data-node-id="{VIS_ID}"]');
    if (vue && vue.getBoundingClientRect().width > 0) {{
        const r = vue.getBoundingClientRect();
        return {{x: r.x, y: r.y, width: r.width, height: r.height, vue: true}};
    }}
    const ds = app.canvas.ds, c = app.canvas.canvas.getBoundingClientRect();
    const [x, y] = ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
    const title = window.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    return {{x: c.left + x, y: c.top + y - title * ds.scale, width: node.size[0] * ds.scale,
             height: (node.size[1] + title) * ds.scale, vue: false}};
}}"""


CHART_WIDTH_JS = f"""() => {{
    const c = window.app.graph.getNodeById({VIS_ID}).stasChart;
    const r = c.canvas.getBoundingClientRect(), root = c.root.getBoundingClientRect();
    return {{canvas: r.width, canvas_height: r.height, root: root.width, open: c.details.open,
             summary_height: c.pre.getBoundingClientRect().height}};
}}"""


def resize_node(fp: FrontendPage, width: float) -> str:
    """Drag the visualizer node's bottom-right corner until the node is ``width`` screen pixels wide,
    as a user resizes it (LiteGraph: the corner of the node; Vue renderer: its resize handle).
    Returns how it was resized ('drag', or 'setSize' where the drag moved nothing)."""
    for _ in range(2):
        pan_into_view(fp, NODE_RECT_JS, corner=True)
        r = fp.evaluate(NODE_RECT_JS)
        x, y = r["x"] + r["width"] - 3, r["y"] + r["height"] - 3
        fp.mouse.move(x, y)
        fp.mouse.down()
        for k in range(1, 6):
            fp.mouse.move(x + (width - r["width"]) * k / 5, y)
        fp.mouse.up()
        time.sleep(0.6)
        if abs(fp.evaluate(NODE_RECT_JS)["width"] - width) < 12:
            return "drag"
    fp.evaluate(f"""(w) => {{
        const app = window.app, node = app.graph.getNodeById({VIS_ID});
        node.setSize([w / app.canvas.ds.scale, node.size[1]]);
        app.graph.setDirtyCanvas(true, true); app.canvas.draw?.(true, true);
    }}""", width)
    time.sleep(0.6)
    return "setSize"


def chart_fill(fp: FrontendPage, widths=(560, 1000)) -> list[dict]:
    """At each node width (screen pixels; resized by dragging), with the summary closed and open:
    the chart's width against the node's (the test wants >= 90 %)."""
    out = []
    details = fp.locator(".stas-chart-details > summary").first
    summary_js = "() => { const r = document.querySelector('.stas-chart-details > summary').getBoundingClientRect(); " \
                 "return {x: r.x, y: r.y, width: r.width, height: r.height}; }"
    for w in widths:
        how = resize_node(fp, w)
        for want_open in (False, True):
            if fp.evaluate(CHART_WIDTH_JS)["open"] != want_open:
                pan_into_view(fp, summary_js)
                details.click()
                time.sleep(0.8)
            node = fp.evaluate(NODE_RECT_JS)
            m = fp.evaluate(CHART_WIDTH_JS)
            out.append({"asked": w, "resized_by": how, "node": node["width"], "open": m["open"],
                        "canvas": m["canvas"], "canvas_height": m["canvas_height"], "root": m["root"],
                        "ratio": m["canvas"] / node["width"] if node["width"] else 0.0})
        pan_into_view(fp, summary_js)
        details.click()  # closed again for the next size
        time.sleep(0.5)
    return out


def pan_into_view(fp: FrontendPage, rect_js: str, corner: bool = False) -> None:
    """Pan the graph canvas so the rectangle ``rect_js`` returns (its bottom-right corner, with
    ``corner``) lies inside the viewport (Playwright's scrolling cannot move the graph)."""
    r = fp.evaluate(rect_js)
    vw, vh = fp.evaluate("() => [window.innerWidth, window.innerHeight]")
    y = r["y"] + r["height"] if corner else r["y"]
    x = r["x"] + r["width"] if corner else r["x"]
    dy = 0 if 80 <= y <= vh - 80 else (vh * 0.6 if corner else vh * 0.4) - y
    dx = 0 if 80 <= x <= vw - 120 else (vw * 0.7 if corner else 200) - x
    if dx or dy:
        fp.evaluate("""([dx, dy]) => {
            const ds = window.app.canvas.ds;
            ds.offset = [ds.offset[0] + dx / ds.scale, ds.offset[1] + dy / ds.scale];
            window.app.graph.setDirtyCanvas(true, true);
            window.app.canvas.draw?.(true, true);
        }""", [dx, dy])
        time.sleep(0.8)


def screen_clip(fp: FrontendPage, r: dict, pad: int) -> dict:
    """``r`` grown by ``pad`` and cut to the viewport: a clip Playwright accepts."""
    vw, vh = fp.evaluate("() => [window.innerWidth, window.innerHeight]")
    x0, y0 = max(0, r["x"] - pad), max(0, r["y"] - pad)
    x1, y1 = min(vw, r["x"] + r["width"] + pad), min(vh, r["y"] + r["height"] + pad)
    return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0}


def open_summary(fp: FrontendPage, path: Path) -> dict:
    """Open the chart's summary and measure it against the node's edges (screen pixels)."""
    fp.locator(".stas-chart-details > summary").first.click()
    time.sleep(1.0)
    fp.evaluate("() => { window.app.graph.setDirtyCanvas(true, true); window.app.canvas.draw?.(true, true); }")
    time.sleep(0.5)
    node = fp.evaluate(NODE_RECT_JS)
    pre = fp.locator(".stas-chart-summary").first.bounding_box()
    root = fp.locator(".stas-chart").first.bounding_box()
    fp.screenshot(path=str(path), clip=screen_clip(fp, node, 24))
    return {"node": node, "pre": pre, "root": root,
            "open": fp.evaluate("() => document.querySelector('.stas-chart-details').open")}


def sort_templates_a_to_z(fp: FrontendPage) -> bool:
    """Frontends with a template sort setting (1.49): sort by title, A -> Z. False where there is none
    (1.27 would store an unknown setting without complaint, so it is told apart by version)."""
    if frontend_version(fp)[:2] < (1, 49):
        return False
    return fp.evaluate("""async () => {
        const s = window.app.extensionManager?.setting;
        try { await s.set('Comfy.Templates.SortBy', 'alphabetical'); } catch (e) { return false; }
        return s.get('Comfy.Templates.SortBy') === 'alphabetical';
    }""")


CARD_JS = """(c) => {
    const img = c.querySelector('img'), r = c.getBoundingClientRect();
    return {name: c.dataset.testid.slice('template-workflow-'.length), text: c.innerText,
            img: img ? img.currentSrc || img.src : null, loaded: img && img.complete ? img.naturalWidth : 0,
            box: {x: r.x, y: r.y, width: r.width, height: r.height}};
}"""


def open_template_cards(fp: FrontendPage, module: str = "comfyui-stas") -> list[dict]:
    """Open Browse Templates, pick this pack's section; the cards as the dialog shows them. Thumbnails
    load lazily (frontend 1.27 also drops those scrolled out of view): each card's is read while
    that card is in view; ``box`` is where the card is with the first one in view."""
    fp.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
    fp.get_by_text(module, exact=True).first.click(timeout=30_000)
    cards = fp.locator('[data-testid^="template-workflow-"]')
    cards.first.wait_for(state="visible", timeout=30_000)
    seen = {}
    for i in range(cards.count()):
        card = cards.nth(i)
        card.scroll_into_view_if_needed(timeout=10_000)
        try:
            card.locator("img").first.evaluate(
                "(img) => new Promise(ok => { if (img.complete && img.naturalWidth) ok(); else "
                "{ img.addEventListener('load', ok, {once: true}); setTimeout(ok, 10000); } })")
        except Exception:  # noqa: BLE001: no img yet; the test names the card whose thumbnail did not load
            time.sleep(1.0)
        info = card.evaluate(CARD_JS)
        seen[info["name"]] = info
    cards.first.scroll_into_view_if_needed(timeout=10_000)
    time.sleep(0.5)
    out = []
    for c in fp.evaluate(f"""() => [...document.querySelectorAll('[data-testid^="template-workflow-"]')]
                             .map({CARD_JS})"""):
        first = seen.get(c["name"], c)
        out.append({**c, "img": first["img"] or c["img"], "loaded": max(first["loaded"], c["loaded"])})
    return out


def cards_screenshot(fp: FrontendPage, cards: list[dict], path: Path) -> None:
    """One screenshot around the given cards."""
    x0 = min(c["box"]["x"] for c in cards) - 8
    y0 = min(c["box"]["y"] for c in cards) - 8
    x1 = max(c["box"]["x"] + c["box"]["width"] for c in cards) + 8
    y1 = max(c["box"]["y"] + c["box"]["height"] for c in cards) + 8
    fp.screenshot(path=str(path), clip={"x": max(0, x0), "y": max(0, y0), "width": x1 - max(0, x0),
                                        "height": y1 - max(0, y0)})
