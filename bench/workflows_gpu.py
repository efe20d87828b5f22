"""Run the shipped example workflows, whole, on a GPU machine with full-size random-weight stand-ins.

    python3 bench/workflows_gpu.py --comfyui SRC --prompts DIR --work DIR --out DIR [--only NAME ...] [--twin]

For each workflow, in an order that lets files be shared and deleted early (the whole set is
about 100 GB, more than such a machine's disk):

1. the model files its loaders name are written at full size under their official names
   (tools/make_standins.py --full: the real architectures from ComfyUI's own classes, random
   weights, MA channel 77 planted with --ma-gain so STAS has something to detect);
2. its API prompt (tools/export_api_prompts.py, the frontend's own graphToPrompt) is queued on a
   real ComfyUI server started on the GPU with this pack (stas_harness/server.py), unchanged:
   same resolution, frames, steps, samplers and STAS settings as the shipped file;
3. the video it saves is opened with PyAV (frames, size, fps, pixel statistics) and the result,
   the time it took and STAS's log lines go into DIR/report.md and results.json.

With --twin, each workflow that holds a STAS Model Patch also runs as its unpatched twin (every
STAS Model Patch removed and its model input wired through, as bypassing it in the frontend does),
in alternating order over --rounds, each run from a freed server (models reloaded, no cached
node outputs): the report puts the steered run's seconds per sampling step (ComfyUI's progress
bars), the time ComfyUI says the prompt took and the GPU's peak memory (nvidia-smi, polled)
beside the unpatched run's.

Random weights make noise, not a scene: the run proves that each full graph loads, patches,
samples, decodes and writes a video at the real sizes, not what STAS does to quality.
--shrink (CPU smoke test only) makes latents and step counts tiny.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _repo import ROOT  # first: the repository root on sys.path (bench/_repo.py)

from stas_harness.server import ComfyServer, PromptError, shrink_prompt
from tools import full_standins as fs  # stdlib at import; ComfyUI only in the generator process

# Order: the Wan 2.1 text encoder and VAE serve five workflows, the A14B experts two; the large files go
# once used, LTX-2's last. A workflow with a file that tools/full_standins.py has no spec for is reported as
# skipped, with the file named. Not yet here: 10 and 11 (Wan Animate 2, Wan 2.2 S2V),
# whose full-size stand-ins exist but whose input media (pose video, reference image, speech) the run does not
# write yet, and whose nodes need ComfyUI 0.33.0 / 0.8.0.
ORDER = ["1. Wan 2.1 T2V with STAS", "2. Without vs with STAS",
         "3. Wan 2.1 I2V with STAS", "5. Wan 2.2 A14B with STAS", "8. Wan 2.2 A14B 4-step LoRA with STAS",
         "4. Wan 2.2 TI2V 5B with STAS", "6. HunyuanVideo with STAS", "7. LTX-2 with STAS"]
LOADER_FILES = {"UNETLoader": ("unet_name",), "CLIPLoader": ("clip_name",), "VAELoader": ("vae_name",),
                "DualCLIPLoader": ("clip_name1", "clip_name2"), "CLIPVisionLoader": ("clip_name",),
                "LoraLoaderModelOnly": ("lora_name",), "CheckpointLoaderSimple": ("ckpt_name",),
                "LTXAVTextEncoderLoader": ("text_encoder", "ckpt_name"), "LTXVAudioVAELoader": ("ckpt_name",),
                "AudioEncoderLoader": ("audio_encoder_name",)}
STAS_PATCH = "STASModelPatch"
FREE_WAIT_S = 11.0  # > ComfyUI's 10 s gc interval, after which its idle worker takes /free's flags


def needed_files(prompt: dict) -> list[str]:
    """Model file names the prompt's loader nodes name."""
    out = []
    for node in prompt.values():
        for key in LOADER_FILES.get(node["class_type"], ()):
            out.append(node["inputs"][key])
    return sorted(set(out))


def unpatched_twin(prompt: dict) -> dict | None:
    """The prompt with every STAS Model Patch removed and whatever it fed wired to the model it took, as the
    frontend's bypass (Ctrl+B) sends it; None if the prompt has no STAS Model Patch."""
    stas = {nid: node["inputs"]["model"] for nid, node in prompt.items() if node["class_type"] == STAS_PATCH}
    if not stas:
        return None

    def source(link):
        while isinstance(link, list) and str(link[0]) in stas:  # STAS chained on STAS: follow to the first model
            link = stas[str(link[0])]
        return link
    out = {}
    for nid, node in prompt.items():
        if nid in stas:
            continue
        node = json.loads(json.dumps(node))
        node["inputs"] = {k: source(v) if isinstance(v, list) and len(v) == 2 and str(v[0]) in stas else v
                          for k, v in node["inputs"].items()}
        out[nid] = node
    return out


_BAR = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<[^,\]]*,\s*([0-9.]+)(s/it|it/s)")


def sampling_steps(text: str) -> dict:
    """Seconds per step from the progress bars in a slice of ComfyUI's log: each bar's final state
    (n == total), its elapsed time (whole seconds, as tqdm prints it) and its displayed rate."""
    done = {}
    for m in _BAR.finditer(text.replace("\r", "\n")):
        n, total = int(m[1]), int(m[2])
        if n == total and total > 0:
            elapsed = int(m[3] or 0) * 3600 + int(m[4]) * 60 + int(m[5])
            rate = float(m[6]) if m[7] == "s/it" else 1.0 / max(float(m[6]), 1e-9)
            done[m.start()] = (total, elapsed, rate)
    bars, last = [], -10**9
    for pos in sorted(done):  # tqdm may draw the final state twice (last update, then close): keep the last
        if bars and done[pos][:2] == tuple(bars[-1][:2]) and pos - last < 400:
            bars[-1] = done[pos]
        else:
            bars.append(done[pos])
        last = pos
    steps = sum(b[0] for b in bars)
    return {"bars": [list(b) for b in bars], "steps": steps,
            "s_per_step": round(sum(b[1] for b in bars) / steps, 3) if steps else None,
            "s_per_step_rate": round(sum(b[0] * b[2] for b in bars) / steps, 3) if steps else None}


class GpuMemory:
    """Peak used memory of GPU 0 (MiB) while running, polled with nvidia-smi; None where there is none."""

    def __init__(self, interval: float = 0.05):
        import threading
        self.interval, self.peak, self.start_used = interval, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @staticmethod
    def used() -> int | None:
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                               capture_output=True, text=True, timeout=10)
            return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.strip() else None
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return None

    def _poll(self):
        while not self._stop.is_set():
            u = self.used()
            if u is None:
                return
            self.peak = u if self.peak is None else max(self.peak, u)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.start_used = self.used()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)


def video_stats(path: Path) -> dict:
    """Frames, size, fps and pixel statistics of a saved video (PyAV, which SaveVideo uses too)."""
    import av
    import numpy as np
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        fps = float(s.average_rate) if s.average_rate else None
        codec = s.codec_context.name
    arr = np.stack(frames).astype(np.float32) / 255.0
    per_frame = arr.reshape(len(frames), -1)
    return {"file": path.name, "bytes": path.stat().st_size, "codec": codec, "frames": len(frames),
            "width": int(arr.shape[2]), "height": int(arr.shape[1]), "fps": fps,
            "pixel_mean": round(float(arr.mean()), 4), "pixel_std": round(float(arr.std()), 4),
            "frame_to_frame_diff": round(float(np.abs(np.diff(per_frame, axis=0)).mean()), 4) if len(frames) > 1 else 0.0}


def log_since(srv, offset: int) -> str:
    """The server's log from byte ``offset`` on."""
    with open(srv.log_path, "rb") as fh:
        fh.seek(offset)
        return fh.read().decode(errors="replace")


def log_lines(text: str) -> list[str]:
    """STAS's own log lines and ComfyUI's per-prompt timing from a slice of the server log."""
    keep = ("STAS", "stas", "Prompt executed", "Requested to load", "loaded completely", "Traceback", "Error")
    return [ln for ln in text.splitlines() if any(k in ln for k in keep)][-40:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, type=Path)
    ap.add_argument("--python", default=sys.executable, help="python that runs ComfyUI (default: this one)")
    ap.add_argument("--prompts", required=True, type=Path, help="API prompts from tools/export_api_prompts.py")
    ap.add_argument("--work", required=True, type=Path, help="ComfyUI base directory (models are written here)")
    ap.add_argument("--out", required=True, type=Path, help="report.md, results.json and the server log")
    ap.add_argument("--only", nargs="*", help="workflow names or their leading numbers (default: all, in ORDER)")
    ap.add_argument("--device", default="cuda", help="where the stand-ins' random tensors are drawn")
    ap.add_argument("--ma-gain", type=float, default=100.0, help="planted MA channel gain (0: none)")
    ap.add_argument("--tiny-diffusion", action="store_true", help="tiny diffusion models (CPU smoke test)")
    ap.add_argument("--shrink", action="store_true", help="tiny latents and 2 steps (CPU smoke test)")
    ap.add_argument("--keep", action="store_true", help="keep stand-ins no later workflow needs")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per workflow")
    ap.add_argument("--copy-videos", action="store_true", help="copy each workflow's first video into --out")
    ap.add_argument("--twin", action="store_true",
                    help="also run each workflow's unpatched twin (STAS Model Patch bypassed), s/step and peak memory beside")
    ap.add_argument("--rounds", type=int, default=1, help="with --twin: rounds, alternating which runs first")
    ap.add_argument("--dry-run", action="store_true", help="print each prompt's files, stand-ins and twin; run nothing")
    a = ap.parse_args(argv)

    names = [n for n in ORDER if not a.only or any(n.split(".")[0] == o or n.startswith(o) for o in a.only)]
    prompts = {n: json.loads((a.prompts / f"{n}.json").read_text()) for n in names}
    if a.dry_run:
        for n in names:
            files = needed_files(prompts[n])
            twin = unpatched_twin(prompts[n])
            print(json.dumps({"workflow": n, "files": files,
                              "no_spec": [f for f in files if f not in fs.SPECS],
                              "stas_nodes": sorted(set(prompts[n]) - set(twin)) if twin else [],
                              "twin_nodes": len(twin) if twin else None}))
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    models = a.work / "models"
    results: list[dict] = []
    extra = []
    try:
        import comfyui_frontend_package  # noqa: F401
    except ImportError:  # a GPU image without the frontend: serve an empty folder instead
        (a.work / "no_frontend").mkdir(parents=True, exist_ok=True)
        extra = ["--front-end-root", str(a.work / "no_frontend")]
    srv = ComfyServer(a.comfyui, a.python, base_dir=a.work, extra_args=tuple(extra), test_nodes=False,
                      cpu=a.device == "cpu")
    # `timeout` sends SIGTERM: stop the server (its own session) on the way out, not leave it on the GPU
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"stopped by SIGTERM after {len(results)} workflow(s)"))
    t0 = time.time()
    srv.start(timeout=600)
    stats = srv.get_json("/system_stats")
    print(f"ComfyUI {srv.version()} up in {time.time() - t0:.0f} s on {[d.get('name') for d in stats.get('devices', [])]}", flush=True)
    try:
        for i, name in enumerate(names):
            prompt = shrink_prompt(prompts[name], length=5, steps=2) if a.shrink else prompts[name]
            files = needed_files(prompt)
            rec: dict = {"workflow": name, "files": files}
            no_spec = [f for f in files if f not in fs.SPECS and not list(models.glob(f"*/{f}"))]
            if no_spec:
                rec.update(ok=False, skipped=True, error=f"no full-size stand-in for {no_spec} (tools/full_standins.py)",
                           files_gb=0, standins_s=0, run_s=0, log=[])
                results.append(rec)
                print(f"[{name}] SKIPPED: {rec['error']}", flush=True)
                continue
            t = time.time()
            missing = [f for f in files if not list(models.glob(f"*/{f}"))]
            if missing:
                tiny = [f for f in missing if a.tiny_diffusion and (fs.SPECS[f].diffusion or fs.SPECS[f].lora_rank)]
                full = [f for f in missing if f not in tiny]
                for names_, flags in ((full, ["--full", "--device", a.device, "--ma-gain", str(a.ma_gain)]),
                                      (tiny, ["--plant-ma"])):
                    if names_:
                        r = subprocess.run([a.python, str(ROOT / "tools" / "make_standins.py"), *flags, "--comfyui",
                                            str(a.comfyui), "--models", str(models), *names_],
                                           capture_output=True, text=True)
                        if r.returncode:
                            raise SystemExit(f"stand-ins for {name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
                        rec.setdefault("written", []).extend(ln for ln in r.stdout.splitlines() if ln.startswith("wrote"))
            rec["standins_s"] = round(time.time() - t, 1)
            rec["files_gb"] = round(sum(p.stat().st_size for f in files for p in models.glob(f"*/{f}")) / 1e9, 2)
            print(f"[{name}] stand-ins ready in {rec['standins_s']} s ({rec['files_gb']} GB): {files}", flush=True)
            log_from = srv.log_path.stat().st_size
            t = time.time()
            try:
                entry = srv.run(prompt, timeout=a.timeout)
                videos = [p for nid, node in prompt.items() if node["class_type"] == "SaveVideo"
                          for p in srv.output_files(entry, nid)]
                rec["videos"] = [video_stats(p) for p in videos]
                rec["ok"] = bool(videos) and all(v["frames"] > 0 for v in rec["videos"])
                if a.copy_videos and videos:
                    shutil.copy2(videos[0], a.out / videos[0].name)
                for nid, node in prompt.items():
                    if node["class_type"] == "STASMAVisualizer":
                        chart = (entry["outputs"].get(nid, {}).get("stas_profile") or [{}])[0]
                        rec["visualizer_text"] = str(chart.get("summary", ""))[:2000]
            except (PromptError, TimeoutError, RuntimeError) as e:
                rec["ok"], rec["error"] = False, str(e)[:3000]
            rec["run_s"] = round(time.time() - t, 1)
            text = log_since(srv, log_from)
            rec["log"] = log_lines(text)
            m = re.findall(r"Prompt executed in ([0-9.:]+)", text)
            rec["comfy_executed_in"] = m[-1] if m else None
            twin = unpatched_twin(prompt) if a.twin else None
            if twin is not None and rec["ok"]:
                rec["twin"] = [timed_run(srv, p, label, a.timeout)
                               for r in range(a.rounds)
                               for label, p in ((("unpatched", twin), ("steered", prompt))[::1 if r % 2 == 0 else -1])]
                rec["ok"] = all(x["ok"] for x in rec["twin"])
                for label in ("unpatched", "steered"):
                    runs = [x for x in rec["twin"] if x["label"] == label and x["s_per_step"]]
                    rec[f"{label}_s_per_step"] = min((x["s_per_step_rate"] for x in runs), default=None)
                    rec[f"{label}_peak_mib"] = max((x["peak_mib"] or 0 for x in runs), default=None)
                print(f"[{name}] twin: " + "; ".join(f"{x['label']} {x['s_per_step']} s/step (rate {x['s_per_step_rate']}), "
                                                   f"peak {x['peak_mib']} MiB, {x['executed_in']} s" for x in rec["twin"]),
                      flush=True)
            results.append(rec)
            print(f"[{name}] {'OK' if rec['ok'] else 'FAILED'} in {rec['run_s']} s: "
                  f"{rec.get('videos') or rec.get('error', '')}", flush=True)
            srv.post_json("/free", {"unload_models": True, "free_memory": True})
            later = {f for n in names[i + 1:] for f in needed_files(prompts[n])}
            if not a.keep:
                for f in files:
                    if f not in later:
                        for p in models.glob(f"*/{f}"):
                            p.unlink()
            (a.out / "results.json").write_text(json.dumps({"system": stats, "results": results}, indent=1))
            write_report(a.out / "report.md", stats, results, srv.version(), a)
    finally:
        srv.stop()
        (a.out / "comfyui.log").write_bytes(srv.log_path.read_bytes()[-4_000_000:])
    return 0 if all(r["ok"] or r.get("skipped") for r in results) else 1


def timed_run(srv, prompt: dict, label: str, timeout: float) -> dict:
    """One run of ``prompt`` from a freed server (models unloaded, node cache reset): its sampling steps,
    ComfyUI's own prompt time and the GPU's peak memory."""
    srv.post_json("/free", {"unload_models": True, "free_memory": True})
    # ComfyUI's worker takes /free's flags only when it wakes between prompts, at the latest 10 s after the last
    # one (its garbage-collection interval); a prompt queued sooner runs first, with the models still loaded and
    # the node outputs cached (seen on the H100: 14.7 s instead of 23). Each run says how many models it loaded.
    time.sleep(FREE_WAIT_S)
    log_from = srv.log_path.stat().st_size
    out = {"label": label}
    with GpuMemory() as mem:
        t = time.time()
        try:
            srv.run(prompt, timeout=timeout)
            out["ok"] = True
        except (PromptError, TimeoutError, RuntimeError) as e:
            out["ok"], out["error"] = False, str(e)[:2000]
        out["wall_s"] = round(time.time() - t, 2)
    text = log_since(srv, log_from)
    m = re.findall(r"Prompt executed in ([0-9.]+) seconds", text)
    out["executed_in"] = float(m[-1]) if m else None
    out.update(sampling_steps(text), peak_mib=mem.peak, start_mib=mem.start_used,
               models_loaded=text.count("Requested to load"))
    return out


def write_report(path: Path, stats: dict, results: list[dict], version: str, a) -> None:
    dev = ", ".join(f"{d.get('name')} ({d.get('vram_total', 0) / 2**30:.0f} GiB)" for d in stats.get("devices", []))
    lines = ["# Example workflows on full-size random-weight stand-ins", "",
             f"ComfyUI {version}, torch {stats.get('system', {}).get('pytorch_version')}, device: {dev}. "
             f"Planted MA gain {a.ma_gain}{', shrunk latents' if a.shrink else ''}"
             f"{', tiny diffusion models' if a.tiny_diffusion else ''}.", "",
             "| workflow | stand-ins (GB) | written in | run | video | result |", "|---|---|---|---|---|---|"]
    for r in results:
        v = "; ".join(f"{x['file']}: {x['frames']} frames {x['width']}x{x['height']} @ {x['fps']:g} fps, "
                      f"{x['bytes'] / 1e6:.1f} MB, pixel std {x['pixel_std']}" for x in r.get("videos", []))
        lines.append(f"| {r['workflow']} | {r['files_gb']} | {r['standins_s']} s | {r['run_s']} s | {v or '-'} | "
                     f"{'ok' if r['ok'] else ('skipped: ' if r.get('skipped') else 'FAILED: ') + r.get('error', '')[:200]} |")
    twins = [r for r in results if r.get("twin")]
    if twins:
        lines += ["", "## Steered beside unpatched (STAS Model Patch bypassed)", "",
                  "Best displayed rate over rounds (s/step), ComfyUI's prompt time, peak used memory of GPU 0 (nvidia-smi).", "",
                  "| workflow | run | s/step | s/step (elapsed) | prompt s | peak MiB | models loaded |",
                  "|---|---|---|---|---|---|---|"]
        for r in twins:
            for x in r["twin"]:
                lines.append(f"| {r['workflow']} | {x['label']} | {x['s_per_step_rate']} | {x['s_per_step']} | "
                             f"{x['executed_in']} | {x['peak_mib']} | {x.get('models_loaded', '')} |")
            u, s_ = r.get("unpatched_s_per_step"), r.get("steered_s_per_step")
            if u and s_:
                lines.append(f"| {r['workflow']} | steered / unpatched | {s_ / u:.4f} | | | "
                             f"{(r['steered_peak_mib'] or 0) - (r['unpatched_peak_mib'] or 0):+d} | |")
    for r in results:
        lines += ["", f"## {r['workflow']}", "", "Files: " + ", ".join(r["files"]), "", "```", *r["log"], "```"]
        if r.get("visualizer_text"):
            lines += ["", "MA Visualizer summary:", "", "```", r["visualizer_text"], "```"]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
