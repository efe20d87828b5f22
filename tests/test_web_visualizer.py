"""The MA Visualizer's in-node chart (web/stas_visualizer.js) in the real ComfyUI frontend.

A real ComfyUI server on 127.0.0.1 (tests/server_env.py: temp base directory, testbed
untouched) with this pack and a test-only node that plants known massive activations
(tests/visualizer_test_nodes), driven by headless Chromium (Debian's, through Playwright):

1. the frontend loads the pack's extension with no console error;
2. the graph (tiny random-weight Wan loaded by UNETLoader -> plant -> STAS Model Patch ->
   MA Recorder -> KSampler -> MA Visualizer) is loaded into the frontend and queued with
   POST /prompt for the page's client id;
3. the chart appears inside the node with the recorded data (points, frames, planted
   values), hover names token / latent frame / position / value, a click zooms to a frame;
4. in the LiteGraph canvas and in the Vue node renderer (Comfy.VueNodes.Enabled);
5. screenshots go to docs/screenshots/ (small PNGs, looked at by a person).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from server_env import ComfyServer, FrontendPage, find_comfyui, skip_missing

ROOT = Path(__file__).resolve().parents[1]
VIS_NODES = Path(__file__).resolve().parent / "visualizer_test_nodes"
SHOTS = ROOT / "docs" / "screenshots"
VIS_ID = "10"
T_LAT, H_TOK, W_TOK = 6, 6, 8  # latent frames and token grid of the graph below (96x128 px, 21 frames)
SCREENSHOT_FRONTEND = (1, 49)   # docs/screenshots/ come from this frontend (ComfyUI 0.33.0) or newer


WRITE_TINY_WAN = """
import sys
sys.path.insert(0, sys.argv[1])
from comfy.cli_args import args
args.cpu = True
import comfy_env as ce
from safetensors.torch import save_file
save_file(ce.tiny_state_dict(ce.tiny_wan_module()), sys.argv[2])
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
                           cwd=str(Path(__file__).resolve().parent), env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
                           capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def vis_server():
    found = find_comfyui()
    if found is None:
        skip_missing("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    srv = VisualizerServer(*found)
    srv.start()
    yield srv
    srv.cleanup()


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
            pytest.skip("this frontend has no Vue node renderer setting")
    return fp


def load_and_run(srv, fp: FrontendPage) -> dict:
    fp.evaluate("async (g) => { await window.app.loadApiJson(g, 'stas-visualizer-test'); }", graph())
    fp.wait_for_function(f"() => window.app.graph.getNodeById({VIS_ID})?.stasChart !== undefined", timeout=30_000)
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


@pytest.mark.parametrize("renderer", ["litegraph", "vue"])
def test_in_node_chart(vis_server, browser, renderer, tmp_path):  # noqa: F811
    fp = open_page(vis_server, browser, vue=renderer == "vue")
    try:
        names = fp.evaluate("() => (window.app.extensions || []).map(e => e.name)")
        assert "comfyui-stas.MAVisualizer" in names
        entry = load_and_run(vis_server, fp)
        ui = entry["outputs"][VIS_ID]["stas_profile"][0]
        assert ui["grid"] == [T_LAT, H_TOK, W_TOK] and len(ui["values"]) == T_LAT * H_TOK * W_TOK

        info = fp.evaluate(f"""() => {{
            const c = window.app.graph.getNodeById({VIS_ID}).stasChart;
            const d = c.data;
            return {{grid: [d.T, d.H, d.W], n: d.values.length, first: d.values[0], classes: d.classes.slice(0, 3),
                     title: c.title.textContent, summary: c.pre.textContent, points: c.root.dataset.points,
                     options: c.select.options.length}};
        }}""")
        assert info["grid"] == [T_LAT, H_TOK, W_TOK] and info["n"] == T_LAT * H_TOK * W_TOK
        assert info["first"] == pytest.approx(1000.0) and info["classes"] == [3, 3, 3]
        assert "block 2, step 0" in info["title"] and "ch 17" in info["summary"]
        assert info["options"] == T_LAT + 1
        version = fp.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ || '0.0.0'")
        if renderer == "vue" and tuple(int(x) for x in version.split(".")[:2]) <= (1, 27):
            assert not pack_errors(fp), pack_errors(fp)
            pytest.skip(f"frontend {version}: its experimental Vue node renderer draws no extension DOM widget "
                        "(only its own widget types); the chart shows in the default LiteGraph renderer there")

        node_rect = frame_node(fp)
        canvas = fp.locator(".stas-chart-canvas").first
        canvas.wait_for(state="visible", timeout=30_000)
        box = canvas.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100
        # hover over the middle of latent frame 2: token, frame, position and value are named
        lay = fp.evaluate(f"() => window.app.graph.getNodeById({VIS_ID}).stasChart.layout()")
        sx = box["width"] / lay["w"]  # CSS px of the chart per screen px (the graph may be zoomed)
        x = box["x"] + (lay["left"] + (2.5 / T_LAT) * (lay["w"] - lay["left"] - lay["right"])) * sx
        y = box["y"] + box["height"] / 2
        fp.mouse.move(x, y)
        fp.mouse.move(x + 1, y)
        tip = fp.locator(".stas-chart-tip").first.text_content()
        assert "latent frame 2" in tip and "token " in tip and "row " in tip and "value " in tip, tip
        tag = "" if renderer == "litegraph" else "_vue"
        # the README shows the newest frontend; other frontends' screenshots stay in the test's temp dir
        shots = SHOTS if tuple(int(x) for x in version.split(".")[:2]) >= SCREENSHOT_FRONTEND else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        shot_box = fp.locator(".stas-chart").first.bounding_box()
        clip = {"x": max(0, shot_box["x"] - 4), "y": max(0, shot_box["y"] - 4),
                "width": shot_box["width"] + 8, "height": shot_box["height"] + 8}
        fp.screenshot(path=str(shots / f"ma_visualizer_chart{tag}.png"), clip=clip)
        if renderer == "litegraph":
            fp.screenshot(path=str(shots / "ma_visualizer_node.png"), clip=node_rect)
        # click zooms to the frame under the cursor; the selector zooms back out
        fp.mouse.click(x, y)
        assert fp.evaluate(f"() => window.app.graph.getNodeById({VIS_ID}).stasChart.frame") == 2
        fp.mouse.move(x + 3, y)
        tip = fp.locator(".stas-chart-tip").first.text_content()
        assert "latent frame 2" in tip, tip
        if renderer == "litegraph":
            fp.screenshot(path=str(shots / "ma_visualizer_chart_zoomed.png"), clip=clip)
        fp.locator(".stas-frame-select").first.select_option("all")
        assert fp.evaluate(f"() => window.app.graph.getNodeById({VIS_ID}).stasChart.frame") is None
        if renderer == "litegraph":
            # the IMAGE output (profile) as ComfyUI shows it, for the README
            for node, name in (("11", "profile"), ("12", "heatmaps"), ("13", "hierarchy"), ("14", "steering")):
                files = vis_server.output_files(entry, node)
                assert files, f"PreviewImage {node} showed nothing"
                shutil.copyfile(files[0], shots / f"ma_visualizer_{name}_output.png")
        assert not pack_errors(fp), pack_errors(fp)
        print(f"frontend {version} ({renderer}): console errors not from the pack: {fp.console_errors}")
    finally:
        fp.ctx.close()
