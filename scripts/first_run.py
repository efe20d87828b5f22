"""First run without weights or a GPU: see STAS and the MA Visualizer work in a real ComfyUI.

    python3 scripts/first_run.py        (ComfyUI: --comfyui PATH, else $COMFYUI_PATH, else the
                                          newest one scripts/setup.sh built: under $STAS_TESTBEDS,
                                          else where set-up last built them, else the default)

Starts that ComfyUI headless on the CPU (on a free local port, with all its state in a temporary
folder: your ComfyUI install is not modified) with this pack loaded, writes a tiny random-weight
Wan 2.1 stand-in (tools/make_standins.py, with planted massive-activation channels), and runs one
graph that renders the same seed twice, without and with STAS Model Patch, recording the massive
activations of every block with the MA Recorder and drawing them with the MA Visualizer. The
visualizer images, the mask preview, one hierarchy figure of both runs on a shared colour scale and
report.md land in --out (default ./stas_first_run).

Only the standard library is needed to run this script; ComfyUI's own python (a venv beside or
inside the ComfyUI folder, or --python) runs ComfyUI and the stand-in generator. The text encoder
is a stand-in too (tests/comfy_test_nodes) and nothing is decoded: the output demonstrates the
tools on random weights; it says nothing about video quality.

    python3 scripts/first_run.py --serve [--port 8188]

starts the same ComfyUI (state in a temporary folder) with the stand-ins and keeps it running for your
browser: open the URL it prints and the page opens on a ready graph ("STAS first run": the tiny Wan,
STAS Model Patch, MA Recorder, KSampler, a stand-in VAE that decodes without weights, Save Video and the
MA Visualizer); press Run. Ctrl-C stops ComfyUI and removes the temporary folder. The graph is loaded
by a small frontend extension that exists only in that temporary folder (SERVE_JS).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _repo import ROOT  # first: the repository root on sys.path (scripts/_repo.py)

from stas_harness.server import (ComfyServer, comfy_python_for, default_testbeds_root, free_port, newest_testbed,
                                 testbeds_root)

MODEL = "wan2.1_t2v_1.3B_fp16.safetensors"
SEED = 42
EXPORTS = "stas_first_run_recordings"  # the visualizers' exports, in the server's output folder

# Run by ComfyUI's python in the repository root (for stas_core): both hierarchies on one colour scale.
COMPARE = """
import sys
import numpy as np
from PIL import Image
from stas_core import plot, stats
from stas_core.record import RunRecording
runs = []
for label, path in (("without STAS", sys.argv[1]), ("with STAS", sys.argv[2])):
    run = RunRecording.load(path)
    mat, blocks, steps = stats.hierarchy_matrix(run, 0)
    runs.append((f"mean MA magnitude by token group, {label}", mat, blocks, steps))
img = plot.hierarchy_comparison_image(runs)
Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(sys.argv[3])
"""


def graph() -> dict:
    """API prompt: one tiny Wan, sampled without (A) and with (B) STAS; both recorded and visualized."""
    rec = dict(blocks="all", steps="all", record="cond", channels="auto", top_k=4, token_stride=0, max_memory_mb=256)
    ks = dict(seed=SEED, steps=10, cfg=5.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    vis = dict(block=2, step=0, sample=0,  # block 2 = "middle" of the 4-block stand-in: the steered one
               chunk="cond", channel="max", threshold=50.0, log_scale=False, export=True)
    p = {
        "unet": ("UNETLoader", dict(unet_name=MODEL, weight_dtype="default")),
        "shift": ("ModelSamplingSD3", dict(model=["unet", 0], shift=8.0)),
        "clip": ("STASTestTextEncoder", dict(kind="wan")),
        "pos": ("CLIPTextEncode", dict(clip=["clip", 0], text="a red fox trotting through fresh snow")),
        "neg": ("CLIPTextEncode", dict(clip=["clip", 0], text="blurry, low quality")),
        "latent": ("EmptyHunyuanLatentVideo", dict(width=256, height=160, length=17, batch_size=1)),
        "mask": ("STASBoundaryMaskBuilder", dict(first_frame=True, boundaries=True, head=1.0, tail=1.0, unit="rows",
                                                 latent=["latent", 0], patch_t=1, patch_hw=2)),
        "stas": ("STASModelPatch", dict(model=["shift", 0], mask=["mask", 0], alpha=1.0, blend=1.0, blocks="middle",
                                        channels="auto", threshold=50.0, top_k=4, start_percent=0.0,
                                        end_percent=0.4, apply_to="cond")),
        "rec_a": ("STASMARecorder", dict(model=["shift", 0], **rec)),
        "rec_b": ("STASMARecorder", dict(model=["stas", 0], **rec)),
        "save_mask": ("SaveImage", dict(images=["mask", 1], filename_prefix="stas_first_run/mask_preview")),
    }
    for run, label in (("a", "without_stas"), ("b", "with_stas")):
        p[f"ks_{run}"] = ("KSampler", dict(model=[f"rec_{run}", 0], positive=["pos", 0], negative=["neg", 0],
                                           latent_image=["latent", 0], **ks))
        p[f"vis_{run}"] = ("STASMAVisualizer", dict(recording=[f"rec_{run}", 1], latent=[f"ks_{run}", 0],
                                                    mask=["mask", 0], filename_prefix=f"{EXPORTS}/{label}", **vis))
        for i, fig in enumerate(("profile", "heatmaps", "hierarchy", "steering")):
            p[f"save_{fig}_{run}"] = ("SaveImage", dict(images=[f"vis_{run}", i],
                                                        filename_prefix=f"stas_first_run/{label}_{fig}"))
    return {k: {"class_type": ct, "inputs": inp} for k, (ct, inp) in p.items()}


# -- --serve: the same stand-ins behind a browser -------------------------------------------------

SERVE_GRAPH_NAME = "STAS first run"
STAS_COLOR = "#2a4858"


def serve_graph() -> tuple[dict, dict]:
    """(API prompt, layout) of the graph --serve opens in the browser: one run with STAS, recorded, decoded
    by a stand-in VAE (no weights: tests/comfy_test_nodes) into a video, and visualized. Layout: node id ->
    position, size and title, in canvas units (about 1500 x 900: readable in a 1600 x 1000 window)."""
    rec = dict(blocks="all", steps="all", record="cond", channels="auto", top_k=4, token_stride=0, max_memory_mb=256)
    vis = dict(block=2, step=0, sample=0, chunk="cond", channel="max", threshold=50.0, log_scale=False,
               export=False, filename_prefix="stas_first_run/ma_recording")
    nodes = {  # id: (class, inputs, (x, y), size or None, title or None)
        1: ("UNETLoader", dict(unet_name=MODEL, weight_dtype="default"), (0, 0), None,
            "Tiny random Wan 2.1 (stand-in)"),
        2: ("ModelSamplingSD3", dict(model=["1", 0], shift=8.0), (0, 130), None, None),
        3: ("STASTestTextEncoder", dict(kind="wan"), (0, 240), None, "Stand-in text encoder (no weights)"),
        4: ("CLIPTextEncode", dict(clip=["3", 0], text="a red fox trotting through fresh snow"), (260, 0),
            [300, 120], "Positive prompt"),
        5: ("CLIPTextEncode", dict(clip=["3", 0], text="blurry, low quality"), (260, 170), [300, 100],
            "Negative prompt"),
        6: ("EmptyHunyuanLatentVideo", dict(width=256, height=160, length=17, batch_size=1), (0, 350), None, None),
        7: ("STASBoundaryMaskBuilder", dict(first_frame=True, boundaries=True, head=1.0, tail=1.0, unit="rows",
                                            latent=["6", 0], patch_t=1, patch_hw=2), (260, 320), None, None),
        8: ("STASModelPatch", dict(model=["2", 0], mask=["7", 0], alpha=1.0, blend=1.0, blocks="middle",
                                   channels="auto", threshold=50.0, top_k=4, start_percent=0.0, end_percent=0.4,
                                   apply_to="cond"), (600, 0), None, None),
        9: ("STASMARecorder", dict(model=["8", 0], **rec), (600, 330), None, None),
        10: ("KSampler", dict(model=["9", 0], positive=["4", 0], negative=["5", 0], latent_image=["6", 0], seed=SEED,
                              control_after_generate="fixed", steps=10, cfg=5.0, sampler_name="euler",
                              scheduler="simple", denoise=1.0), (860, 0), None, None),
        11: ("STASTestVAE", dict(kind="wan2.1"), (860, 310), None, "Stand-in VAE (no weights)"),
        12: ("VAEDecode", dict(samples=["10", 0], vae=["11", 0]), (860, 420), None, None),
        13: ("CreateVideo", dict(images=["12", 0], fps=16.0), (860, 510), None, None),
        14: ("SaveVideo", dict(video=["13", 0], filename_prefix="stas_first_run/video", format="auto", codec="auto"),
             (860, 640), [260, 260], None),
        15: ("STASMAVisualizer", dict(recording=["9", 1], latent=["10", 0], mask=["7", 0], **vis), (1150, 0),
             [480, 600], None),
        16: ("PreviewImage", dict(images=["7", 1]), (260, 600), [300, 280], "Which tokens STAS steers"),
        17: ("PreviewImage", dict(images=["15", 3]), (1150, 680), [480, 220], "Steering: before vs after"),
    }
    prompt, layout = {}, {}
    for nid, (ct, inputs, pos, size, title) in nodes.items():
        prompt[str(nid)] = {"class_type": ct, "inputs": inputs}
        layout[str(nid)] = {"pos": list(pos), "size": size, "title": title,
                            "color": STAS_COLOR if ct.startswith("STAS") and not ct.startswith("STASTest") else None}
    return prompt, layout


# The extension --serve installs in its temporary custom_nodes: once per browser tab, after the frontend has
# restored its last workflow (the first graph it configures), it opens the first-run graph instead.
SERVE_JS = r"""
import { app } from "../../scripts/app.js";

const KEY = "comfyui-stas-first-run-opened";
let opening = null;

async function openFirstRun() {
  const { prompt, layout, name } = await (await fetch(new URL("first_run_graph.json", import.meta.url))).json();
  await app.loadApiJson(prompt, name);
  for (const [id, l] of Object.entries(layout)) {
    const n = app.graph.getNodeById(+id) ?? app.graph.getNodeById(id);
    if (!n) continue;
    n.pos = l.pos;
    if (l.title) n.title = l.title;
    if (l.color) { n.color = l.color; n.bgcolor = "#1f3a47"; }
    const min = n.computeSize?.() ?? [0, 0];
    n.size = l.size ? [Math.max(l.size[0], min[0]), Math.max(l.size[1], min[1])] : min;
  }
  // the whole graph in view, at a zoom where titles and widgets are drawn
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of app.graph._nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  // clear of the side bar and the menu, which lie over the canvas in newer frontends
  const c = app.canvas, r = c.canvas.getBoundingClientRect();
  const left = Math.max(72 - r.left, 16), top = Math.max(90 - r.top, 16);
  const s = Math.max(0.6, Math.min(1, (r.width - left - 20) / (x1 - x0), (r.height - top - 20) / (y1 - y0)));
  c.ds.scale = s;
  c.ds.offset = [left / s - x0, top / s - y0];
  app.graph.setDirtyCanvas(true, true);
}

function openOnce() {
  if (sessionStorage.getItem(KEY)) return;
  sessionStorage.setItem(KEY, "1");
  opening = new Promise((ok) => setTimeout(ok, 0)).then(openFirstRun).catch((e) => {
    console.error("comfyui-stas first run: could not open the graph", e);
  });
}

app.registerExtension({
  name: "comfyui-stas.firstRun",
  afterConfigureGraph() { openOnce(); },
  setup() { setTimeout(openOnce, 10000); },  // a frontend that configured no graph at start-up
});
"""

SERVE_INIT = 'WEB_DIRECTORY = "web"\nNODE_CLASS_MAPPINGS = {}\n'


class ServedComfy(ComfyServer):
    """The harness's server on a chosen port, with the first-run extension in its custom_nodes."""

    def __init__(self, *args, port: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.wanted_port = port

    def _prepare_base(self) -> None:
        super()._prepare_base()
        ext = self.base_dir / "custom_nodes" / "stas_first_run"
        (ext / "web").mkdir(parents=True, exist_ok=True)
        (ext / "__init__.py").write_text(SERVE_INIT)
        (ext / "web" / "first_run.js").write_text(SERVE_JS)
        prompt, layout = serve_graph()
        (ext / "web" / "first_run_graph.json").write_text(
            json.dumps({"name": SERVE_GRAPH_NAME, "prompt": prompt, "layout": layout}, indent=1))

    def command(self) -> list[str]:
        if self.wanted_port:
            self.port = self.wanted_port
        return super().command()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start_with_standins(srv, src: Path, python: str) -> float:
    """Start ComfyUI while the stand-in models are written into its model folder, then wait for them; returns
    the time ComfyUI was up (the stand-ins may take longer)."""
    print(f"starting ComfyUI at {src} (python {python}) on the CPU, state in {srv.base_dir} ...", flush=True)
    gen = subprocess.Popen([python, "-B", str(ROOT / "tools" / "make_standins.py"), "--comfyui", str(src),
                            "--models", str(srv.models_dir), "--plant-ma", MODEL],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    srv.start()
    t_server = time.monotonic()
    gen_out = gen.communicate(timeout=600)[0]
    if gen.returncode != 0:
        raise SystemExit(f"writing the stand-in model failed:\n{gen_out}")
    return t_server


def serve(src: Path, python: str, port: int) -> int:
    """Start ComfyUI with the stand-ins and the first-run graph; run until Ctrl-C (or SIGTERM), then stop it
    and remove its temporary folder."""
    if port and not port_free(port):
        if port != 8188:
            raise SystemExit(f"port {port} is in use: give another --port, or --port 0 for a free one")
        port = 0
    srv = ServedComfy(src, python, port=port or free_port())

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill` stops it as cleanly as Ctrl-C
    try:
        start_with_standins(srv, src, python)
        print(f"\nComfyUI {srv.version()} with comfyui-stas and the stand-in models is running at\n\n    {srv.url}\n\n"
              f"Open it in a browser: the page opens on the graph '{SERVE_GRAPH_NAME}'; press Run (about 10-30 s on "
              "a CPU). Random weights: it shows the nodes working, not what STAS does to a real video.\n"
              "Press Ctrl-C here to stop ComfyUI (its temporary folder is removed).", flush=True)
        while srv.proc is not None and srv.proc.poll() is None:
            time.sleep(0.5)
        print(f"ComfyUI exited by itself (code {srv.proc.returncode if srv.proc else '?'}):\n{srv.log_tail()}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping ComfyUI ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        srv.cleanup()
        print(f"stopped; removed {srv.base_dir}", flush=True)


def _summary(entry: dict, run: str) -> str:
    text = entry["outputs"].get(f"vis_{run}", {}).get("stas_profile", [{}])[0].get("summary", "")
    return "\n".join(line for line in text.splitlines() if not line.startswith("Exported:")).strip()


def report(srv: ComfyServer, entry: dict, out: Path, seconds: dict) -> str:
    """report.md, written for a ComfyUI user: what ran, what each image shows, the words used."""
    images = sorted(p.name for p in out.glob("*.png"))
    lines = [
        "# comfyui-stas first run",
        "",
        f"ComfyUI {srv.version()} at {srv.src} ran one graph on the CPU. The model is a tiny random-weight "
        f"stand-in for Wan 2.1 T2V saved as `{MODEL}` (4 blocks, hidden size 128, one channel made "
        "massive on purpose in every block), with a stand-in text encoder. The same seed was sampled twice "
        "(10 steps): once **without STAS** and once **with STAS Model Patch** on the middle block (block 2). "
        "An MA Recorder recorded every block and step of both runs and an MA Visualizer drew each.",
        "",
        "Random weights have no learned structure: this run shows the nodes working end to end in your "
        "ComfyUI, not what STAS does to a real video.",
        "",
        "## Words used here",
        "",
        "- **Massive activation (MA)**: a few channels of a transformer block's output are hundreds or "
        "thousands of times larger than the rest. The MA Visualizer calls a channel massive when its largest "
        "value is at least `threshold` (50) times the average size of all values (its *peak-to-mean ratio*).",
        "- **Latent frame**: the video model works on a compressed video; Wan packs 4 video frames into one "
        "latent frame (the first latent frame holds only the first video frame).",
        "- **First-frame tokens**: every token of the first latent frame. In real video models they carry the "
        "largest MAs.",
        "- **Boundary tokens**: the first (*head*) and last (*tail*) token rows of every later latent frame, "
        "where one chunk of time meets the next. The paper finds their MAs smaller than the first frame's but "
        "larger than the rest.",
        "- **Interior tokens**: all other tokens.",
        "- **Ratios** in the summaries: the mean MA size of one group divided by another's, e.g. "
        "`boundary/interior 4.00x` means boundary tokens are on average 4 times larger there. With real "
        "weights you would expect first frame > boundary > interior; here the numbers only show the tools work.",
        "- **Steering**: STAS sets the MA channels of first-frame and boundary tokens, in one block and in the "
        "early steps only, to `alpha` times that channel's largest value (sign kept).",
        "- **Tracked channels**: the channels whose values the MA Recorder keeps, per block: the `top_k` (4) "
        "with the highest peak-to-mean ratio at the first recorded step. Only those at or above `threshold` "
        "are *detected MA channels*; the rest are the next largest, kept for comparison. \"max over tracked "
        "(channels [...])\" in the summaries below: each token's value is its largest |h| over those tracked "
        "channels, so it is the massive channel's value wherever that one is largest.",
        "",
        "## Images",
        "",
        "- `mask_preview_*`: which tokens STAS steers, one tile per latent frame (red: first frame, orange: head "
        "row, blue: tail row, dark: not steered).",
        "- `*_profile_*`: the MA size of every token, in token order; vertical lines separate latent frames.",
        "- `*_heatmaps_*`: the MA size of every token, one small map per latent frame.",
        "- `*_hierarchy_*`: mean MA size of first-frame, boundary and interior tokens for every block and "
        "step of one run; each run's figure has its own colour scale.",
        "- `hierarchy_without_vs_with.png`: the hierarchy of both runs, one above the other, on **one shared "
        "colour scale**: compare these two by eye, not the separate `*_hierarchy_*` figures. With STAS, block 3 "
        "lights up as well as block 2, though only block 2 was steered: each block adds its output to the "
        "*residual stream* that the next block reads, so the values STAS sets in block 2 carry through into "
        "block 3's output (blocks 0 and 1 run before block 2 and are unchanged). Only the first 4 of the 10 "
        "steps change: the window (`end_percent` 0.4) ends there. Interior tokens are not steered.",
        "- `with_stas_steering_*`: the steered values before (grey) and after (red) STAS, at block 2, step 0.",
        "- `without_stas_steering_*`: empty, as it should be: nothing is steered in the run without STAS.",
        "",
        *[f"- {name}" for name in images],
        "",
        "## MA Visualizer summary, without STAS",
        "",
        "```",
        _summary(entry, "a"),
        "```",
        "",
        "## MA Visualizer summary, with STAS",
        "",
        "```",
        _summary(entry, "b"),
        "```",
        "",
        "## Timing",
        "",
        "How long each part took, one after the other (they add up to the total):",
        "",
        *[f"- {k}: {v:.1f} s" for k, v in seconds.items()],
        "",
    ]
    return "\n".join(lines)


def compare_hierarchies(srv: ComfyServer, python: str, out: Path) -> None:
    """Both runs' hierarchy figures on one colour scale, drawn from the visualizers' exports."""
    found = {label: sorted((srv.output_dir / EXPORTS).glob(f"{label}_*.safetensors"))
             for label in ("without_stas", "with_stas")}
    if not all(found.values()):
        raise RuntimeError(f"the MA Visualizers exported no recording: {found}")
    subprocess.run([python, "-B", "-c", COMPARE, str(found["without_stas"][-1]), str(found["with_stas"][-1]),
                    str((out / "hierarchy_without_vs_with.png").resolve())],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", type=Path, default=os.environ.get("COMFYUI_PATH") or newest_testbed(),
                    help="ComfyUI folder (the one with main.py); default $COMFYUI_PATH, else the newest "
                         "ComfyUI that scripts/setup.sh built (under $STAS_TESTBEDS, else where set-up last "
                         "built them, recorded in ~/.cache/comfyui-stas/testbeds-location)")
    ap.add_argument("--python", help="python that runs that ComfyUI (default: $COMFYUI_PYTHON, a venv beside or "
                                     "inside it, else this python)")
    ap.add_argument("--out", type=Path, default=Path("stas_first_run"), help="output folder (default ./stas_first_run)")
    ap.add_argument("--serve", action="store_true",
                    help="keep ComfyUI running with the stand-ins and a ready graph for your browser; Ctrl-C stops it")
    ap.add_argument("--port", type=int, default=8188,
                    help="with --serve: the port on 127.0.0.1 (default 8188, a free one if that is taken; 0: a free one)")
    a = ap.parse_args(argv)
    if a.comfyui is None:
        ap.error(f"no ComfyUI found: {testbeds_root()} has no comfyui-<version>/{{src,venv}} testbed. If you built "
                 "the testbeds elsewhere, set STAS_TESTBEDS=<where you built them>; else run 'bash scripts/setup.sh' "
                 f"(it builds them under {os.environ.get('STAS_TESTBEDS') or default_testbeds_root()}), "
                 "or give --comfyui /path/to/ComfyUI (the folder with main.py), or set COMFYUI_PATH")
    if not (Path(a.comfyui) / "main.py").exists():
        ap.error(f"--comfyui {a.comfyui}: no main.py there; give the ComfyUI folder (the one with main.py)")
    src = Path(a.comfyui).resolve()
    python = a.python or comfy_python_for(src)
    if a.serve:
        return serve(src, python, a.port)
    t0 = time.monotonic()
    srv = ComfyServer(src, python)
    try:
        t_server = start_with_standins(srv, src, python)
        t_ready = time.monotonic()
        print(f"ComfyUI {srv.version()} is up at {srv.url}; running the STAS + MA Visualizer graph ...", flush=True)
        entry = srv.run(graph(), timeout=600)
        t_done = time.monotonic()
        a.out.mkdir(parents=True, exist_ok=True)
        for nid in entry["outputs"]:
            for f in srv.output_files(entry, nid):
                shutil.copy2(f, a.out / f.name)
        compare_hierarchies(srv, python, a.out)
        t_fig = time.monotonic()
        # durations, not times since the start: the stand-in model is written while ComfyUI starts
        seconds = {"ComfyUI start-up (the stand-in model was written meanwhile)": t_server - t0,
                   "then waiting for the stand-in model": t_ready - t_server,
                   "graph (2 runs, recorded and visualized)": t_done - t_ready,
                   "copying the images, drawing both hierarchies on one scale": t_fig - t_done,
                   "total": t_fig - t0}
        (a.out / "report.md").write_text(report(srv, entry, a.out, seconds))
        print(f"done in {t_fig - t0:.0f} s: {len(list(a.out.glob('*.png')))} images and report.md in {a.out.resolve()}")
        return 0
    except Exception as e:
        print(f"first run failed: {e}\n--- ComfyUI log (tail) ---\n{srv.log_tail()}", file=sys.stderr)
        return 1
    finally:
        srv.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
