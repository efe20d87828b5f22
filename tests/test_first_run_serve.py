"""`python3 scripts/first_run.py --serve` (README, "Try it"; issue 31 item 2): one command starts ComfyUI
with this pack, the stand-in models and a ready graph; the page opens on that graph, its Run button runs
it, and Ctrl-C (SIGINT) stops ComfyUI, frees the port and removes the temporary folder.

The script runs as a user runs it (python3, the testbed found through COMFYUI_PATH), on a free port;
headless Chromium (Debian's, through Playwright) opens the printed URL on a fresh profile, waits for
the first-run graph, clicks Run and waits for the run in the server's /history.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from stas_harness.server import CHROMIUM, CHROMIUM_ARGS, ensure_playwright, find_comfyui, free_port, skip_missing

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def served():
    """first_run.py --serve on a free port; (process, url, state folder, port, printed lines)."""
    found = find_comfyui()
    if found is None:
        skip_missing("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    if not Path(CHROMIUM).exists():
        skip_missing(f"Chromium not found at {CHROMIUM}")
    src, python = found
    port = free_port()
    proc = subprocess.Popen(["python3", "scripts/first_run.py", "--serve", "--port", str(port), "--comfyui", str(src)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=dict(os.environ, COMFYUI_PYTHON=python))
    lines, url, state = [], None, None
    deadline = time.monotonic() + 400
    try:
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if m := re.search(r"state in (\S+) \.\.\.", line):
                state = Path(m.group(1))
            if m := re.match(r"\s+(http://127\.0\.0\.1:\d+)\s*$", line):
                url = m.group(1)
        assert url == f"http://127.0.0.1:{port}", "".join(lines)
        yield proc, url, state, port, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_serve_runs_from_the_run_button_and_stops_on_ctrl_c(served, tmp_path):
    proc, url, state, port, lines = served
    assert state is not None and state.is_dir(), "".join(lines)
    sync_api = ensure_playwright()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})  # a fresh profile, as a new user's
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "first run" in m.text else None)
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        # the page opens on the first-run graph: the stand-in Wan, STAS, the recorder, the visualizer
        page.wait_for_function("() => window.app?.graph?._nodes?.some(n => n.type === 'STASMAVisualizer')",
                               timeout=120_000)
        page.wait_for_timeout(1000)
        graph = page.evaluate("""() => ({types: window.app.graph._nodes.map(n => n.type),
                                         scale: window.app.canvas.ds.scale, low: window.app.canvas.low_quality})""")
        assert {"UNETLoader", "STASModelPatch", "STASMARecorder", "KSampler", "STASTestVAE", "VAEDecode",
                "SaveVideo", "STASMAVisualizer"} <= set(graph["types"]), graph
        assert not graph["low"], f"the graph opens at zoom {graph['scale']}: nodes drawn as blank boxes"
        assert get_json(f"{url}/history") == {}
        # the frontend's own Run button
        page.get_by_role("button", name=re.compile(r"^\s*Run\b")).first.click(timeout=30_000)
        deadline, entry = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            hist = get_json(f"{url}/history")
            entry = next(iter(hist.values()), None)
            if entry and entry.get("status", {}).get("completed") is not None:
                break
            time.sleep(1)
        assert entry and entry["status"].get("status_str") == "success", json.dumps(entry, indent=1)[:3000]
        outputs = entry["outputs"]
        by_type = {entry["prompt"][2][nid]["class_type"]: out for nid, out in outputs.items()}
        video = (by_type["SaveVideo"].get("images") or by_type["SaveVideo"].get("videos") or [None])[0]
        assert video, by_type["SaveVideo"]
        q = f"filename={video['filename']}&subfolder={video.get('subfolder', '')}&type={video.get('type', 'output')}"
        with urllib.request.urlopen(f"{url}/view?{q}", timeout=30) as r:
            assert len(r.read()) > 1000, "the saved video is empty"
        summary = by_type["STASMAVisualizer"]["stas_profile"][0]["summary"]
        assert "STAS steering here: channels [77]" in summary, summary  # the stand-in's planted channel, steered
        # the result reached the page: the visualizer's chart has its data
        page.wait_for_function("() => window.app.graph._nodes.find(n => n.type === 'STASMAVisualizer')"
                               "?.stasChart?.data", timeout=60_000)
        # a negative block typed on the node: the chart's title says what it resolved to (issue 31 item 7)
        titles = page.evaluate("""() => {
            const c = window.app.graph._nodes.find(n => n.type === 'STASMAVisualizer').stasChart, before = c.title.textContent;
            c.setData({...c.data, asked: {block: -1, step: 0}});
            return [before, c.title.textContent]; }""")
        assert "block 2, step 0 (sigma" in titles[0], titles
        assert "block 2 (-1 = the last recorded), step 0 (sigma" in titles[1], titles
        page.screenshot(path=str(tmp_path / "served_after_run.png"))
        print(f"frontend {page.evaluate('() => window.__COMFYUI_FRONTEND_VERSION__')}: "
              f"zoom {graph['scale']:.3f}, screenshot {tmp_path / 'served_after_run.png'}")
        assert errors == [], errors
        browser.close()
    # Ctrl-C: ComfyUI stops, the port is free again, the temporary folder is gone, exit code 0
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped; removed" in rest, rest
    assert not port_open(port), f"port {port} still answers after Ctrl-C"
    assert not state.exists(), f"{state} left behind"
