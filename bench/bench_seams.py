#!/usr/bin/env python3
"""Temporal Seam Meter benchmark (CPU): seconds and peak extra memory of stas_core.seams.measure
on an 81-frame 1280x720 video (float32 [81, 720, 1280, 3], ComfyUI's IMAGE layout, 896 MB).

Goal: under 2 s on a 2-core CPU, allocating at most one extra copy of the video.
Peak memory is the process's resident high-water mark during the call above what was resident
before it (Linux: /proc/self/clear_refs resets the mark), so it counts every allocation, torch's
included.  The video is synthetic but not trivial: a broadband texture panned 3 px/frame with a
moving blob, without and with a per-chunk pattern (seams), so motion compensation does real work.

    python3 bench/bench_seams.py [--repeats 5] [--threads N] [--frames 81 --width 1280 --height 720]

Prints a markdown table naming the CPU, threads and load average.  Wall time depends on what else
runs on the machine; CPU time (all threads of this process) is the work itself: on an idle machine
wall time is at most that.  Needs only torch and numpy.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import _repo  # noqa: F401  (first: the repository root on sys.path, bench/_repo.py)

from stas_core.seams import SeamOptions, measure


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_video(n: int, h: int, w: int, seams: bool, seed: int = 0) -> torch.Tensor:
    """Broadband (1/f) texture panned 3 px/frame, a moving blob, optional per-chunk pattern."""
    g = torch.Generator().manual_seed(seed)
    pad = 3 * n + 8
    H, W = h + 8, w + pad
    f = torch.fft.rfft2(torch.randn(3, H, W, generator=g))
    r = (torch.fft.fftfreq(H)[:, None] ** 2 + torch.fft.rfftfreq(W)[None] ** 2).sqrt().clamp_min(1.0 / max(H, W))
    tex = torch.fft.irfft2(f / r, s=(H, W))
    tex = ((tex - tex.mean()) / tex.std() * 0.12 + 0.5).permute(1, 2, 0).contiguous()
    video = torch.empty(n, h, w, 3)
    yy = torch.arange(h)[:, None].float()
    xx = torch.arange(w)[None].float()
    pats = None
    if seams:
        k = (n + 2) // 4 + 1
        low = torch.randn(k, 3, h // 16, w // 16, generator=g)
        pats = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear").permute(0, 2, 3, 1)
        pats = pats / pats.abs().mean() * 0.02
    for i in range(n):
        x0 = pad - 3 * i - 4
        frame = tex[4:4 + h, x0:x0 + w].clone()
        blob = torch.exp(-((yy - h / 2) ** 2 + (xx - 100 - 6 * i) ** 2) / (2 * 60.0 ** 2))
        frame += blob[..., None] * 0.2
        if pats is not None:
            frame += pats[(i + 3) // 4]
        video[i] = frame.clamp_(0, 1)
    return video


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--analysis-size", type=int, default=320)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = SeamOptions(analysis_size=args.analysis_size)
    rows = []
    for seams in (False, True):
        video = make_video(args.frames, args.height, args.width, seams)
        video_mb = video.numel() * 4 / 2 ** 20
        measure(video, opts)  # warm-up (first-call allocations, FFT plans)
        times, cpu, peaks = [], [], []
        for _ in range(args.repeats):
            before = rss_kb("VmRSS")
            ok = reset_peak()
            t0, c0 = time.perf_counter(), time.process_time()
            rep = measure(video, opts)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            peaks.append((rss_kb("VmHWM") - before) / 1024 if ok else float("nan"))
        rows.append(dict(case="pan + seams" if seams else "pan, no seams", video_mb=video_mb,
                         median=statistics.median(times), best=min(times), worst=max(times),
                         cpu=statistics.median(cpu),
                         peak=max(peaks), ratio=rep.seam_ratio, flagged=int(rep.flagged.sum()),
                         seams=len(rep.seam_pairs), shift=float(abs(rep.shifts[1:, 1]).mean())))
        del video
    load = os.getloadavg()
    print(f"\nTemporal Seam Meter, {args.frames} frames {args.width}x{args.height} float32; CPU: {cpu_name()}, "
          f"{os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; {args.repeats} runs per case\n")
    print("| case | wall seconds (median, best, worst) | CPU seconds (median, all threads) | peak extra memory | video | "
          "extra / video | seam ratio | seams flagged | pan found |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['median']:.2f}, {r['best']:.2f}, {r['worst']:.2f} | {r['cpu']:.2f} | {r['peak']:.0f} MiB | "
              f"{r['video_mb']:.0f} MiB | {r['peak'] / r['video_mb']:.2f} | {r['ratio']:.2f} | "
              f"{r['flagged']} of {r['seams']} | {r['shift']:.1f} px/frame |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
