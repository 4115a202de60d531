#!/usr/bin/env python
"""Identity on the Pose2Sim multi-person demo: is the tracked subject the performer, frame by frame?

Each of the 4 views (100 frames, 60 fps, 1088x1920) shows the performer (shirtless, cyan cap,
black shorts, on the treadmill) and a bystander (white T-shirt, jeans) who overlap in several
views; cam01/cam02 also show a third person far in the background. The subject is chosen with
`--person X,Y` (a pixel on the performer's body in frame 0, `PERFORMER_POINT`) and the embedded
BlazePose estimator runs over the whole clip. Per frame the subject's hip centre (mean of the
two BlazePose hip landmarks) is checked against `LABELS`: for each view, frame ranges and a
half-plane the performer's hips are in and the bystander's are not. The labels were made by
looking at every 2nd frame of each view with the half-plane drawn on it (`--draw DIR` writes
those sheets again).

Figures per view: share of tracked frames on the performer (target 100 %), identity switches
(performer -> someone else between consecutive tracked frames; target 0), detection rate =
tracked frames / frames where the performer is visible (all 100 in every view, by looking),
frames lost (NaN), frames flagged as overlapping another person, frames flagged
`identity_doubt` (landmarks' colours drifting from the subject's typical ones).

`--process-demos` also runs every public demo clip (single- and multi-person, 8 videos) through
`sam4dcap process` once and reports exit codes and whether report.html was written (heavy; kept
in bench/results/identity_demo_runs.json and shown by later runs without the flag).
Writes bench/results/identity.md; the last stdout line is the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("SAM4DCAP_CACHE", ROOT / ".cache"))
VIEWS = ("cam01", "cam02", "cam03", "cam04")

# A pixel on the performer's body in frame 0 of each view (looked up on the frames).
PERFORMER_POINT = {"cam01": (440, 830), "cam02": (550, 800), "cam03": (660, 900), "cam04": (400, 1000)}

# view -> [(first frame, last frame, axis, "<" or ">", value px)]: in those frames the performer's
# hip centre satisfies `axis op value`, the bystander's (and the third person's) does not.
LABELS: dict[str, list[tuple[int, int, str, str, float]]] = {
    "cam01": [(0, 99, "y", "<", 1100)],
    "cam02": [(0, 99, "x", ">", 420)],
    # cam03, frames 79-88 looked at closely: the performer's black shorts span x 350-500 px, the
    # bystander's jeans 230-350 px; a hip centre left of 380 has at least one hip on the jeans.
    "cam03": [(0, 99, "x", ">", 380)],
    "cam04": [(0, 99, "x", "<", 620)],
}


def label_rule(view: str, frame: int):
    for first, last, axis, op, value in LABELS[view]:
        if first <= frame <= last:
            return axis, op, value
    raise KeyError(f"{view}: no label for frame {frame}")


def on_performer(view: str, frame: int, hip_xy) -> bool:
    axis, op, value = label_rule(view, frame)
    v = hip_xy[0] if axis == "x" else hip_xy[1]
    return bool(v < value) if op == "<" else bool(v > value)


def run_view(view: str, person: str, *, draw_dir: Path | None = None) -> dict:
    import cv2

    from sam4dcap_perception.blazepose import BlazePoseEstimator
    from sam4dcap_perception.video_source import open_source

    frames = []
    cells = []
    t0 = time.perf_counter()
    with BlazePoseEstimator({"person": person}) as est:
        for f in open_source(CACHE / "pose2sim_multi" / "videos" / f"{view}.mp4"):
            o = est.process(f)
            hip = o.keypoints_2d[23:25].mean(axis=0) if o.tracked else None
            frames.append({"index": f.index, "tracked": o.tracked, "hip": hip, "overlap": o.extra.get("overlap", False),
                           "doubt": o.extra.get("identity_doubt", False),
                           "track_id": o.extra.get("track_id")})
            if draw_dir is not None and f.index % 2 == 0:
                cells.append(_draw(f.image, view, f.index, o, hip))
    seconds = time.perf_counter() - t0
    if draw_dir is not None:
        draw_dir.mkdir(parents=True, exist_ok=True)
        while len(cells) % 10:
            cells.append(np.zeros_like(cells[0]))
        grid = np.concatenate([np.concatenate(cells[i:i + 10], axis=1) for i in range(0, len(cells), 10)], axis=0)
        cv2.imwrite(str(draw_dir / f"identity_{view}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    tracked = [fr for fr in frames if fr["tracked"]]
    right = [on_performer(view, fr["index"], fr["hip"]) for fr in tracked]
    switches = sum(1 for a, b in zip(right, right[1:]) if a and not b)
    return {"view": view, "person": person, "frames": len(frames), "tracked": len(tracked),
            "right": int(sum(right)), "wrong_frames": [fr["index"] for fr, r in zip(tracked, right) if not r],
            "switches": switches, "overlap": sum(fr["overlap"] for fr in frames),
            "doubt": sum(fr["doubt"] for fr in frames), "seconds": seconds}


def _draw(image, view, index, obs, hip):
    import cv2

    im = image.copy()
    axis, op, value = label_rule(view, index)
    h, w = im.shape[:2]
    if axis == "x":
        cv2.line(im, (int(value), 0), (int(value), h - 1), (255, 255, 0), 6)
    else:
        cv2.line(im, (0, int(value)), (w - 1, int(value)), (255, 255, 0), 6)
    for tid, box, score, seen, overlap in obs.extra.get("people", []):
        colour = (255, 0, 0) if overlap else (0, 255, 0)
        cv2.rectangle(im, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), colour, 6 if seen else 2)
        cv2.putText(im, str(tid), (int(box[0]) + 8, int(box[1]) + 70), cv2.FONT_HERSHEY_SIMPLEX, 3, colour, 8)
    if hip is not None:
        ok = on_performer(view, index, hip)
        cv2.circle(im, (int(hip[0]), int(hip[1])), 30, (0, 255, 0) if ok else (255, 0, 0), -1)
    cv2.putText(im, str(index), (10, 110), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 0, 255), 10)
    return cv2.resize(im, (163, 288), interpolation=cv2.INTER_AREA)


def process_demos(out_root: Path) -> list[dict]:
    """Every public demo clip through `sam4dcap process` (one at a time), exit code + report."""
    rows = []
    env = dict(os.environ)
    for demo in ("pose2sim_demo", "pose2sim_multi"):
        for view in VIEWS:
            video = CACHE / demo / "videos" / f"{view}.mp4"
            out = out_root / demo / view
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "process", str(video), "--height",
                                "1.75", "--mass", "70", "--out", str(out), "--quiet", "--force"],
                               capture_output=True, text=True, env=env)
            last = (p.stderr.strip().splitlines() or [""])[-1]
            rows.append({"clip": f"{demo}/{view}", "rc": p.returncode, "report": (out / "report.html").is_file(),
                         "seconds": time.perf_counter() - t0, "message": last if p.returncode else ""})
            print(f"{demo}/{view}: exit {p.returncode}, report {rows[-1]['report']} "
                  f"({rows[-1]['seconds']:.0f} s) {rows[-1]['message']}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draw", type=Path, default=None, metavar="DIR", help="write label-check sheets (PNG) here")
    ap.add_argument("--auto", action="store_true", help="also run each view with --person auto (the old rule)")
    ap.add_argument("--process-demos", type=Path, default=None, metavar="OUT_DIR",
                    help="also run the 8 demo clips through `sam4dcap process` into OUT_DIR")
    args = ap.parse_args(argv)
    if not (CACHE / "pose2sim_multi" / ".complete").is_file():
        print(f"multi-person demo missing in {CACHE}: run `make setup`", file=sys.stderr)
        return 2
    load = os.getloadavg()[0]
    results = []
    for view in VIEWS:
        x, y = PERFORMER_POINT[view]
        results.append(run_view(view, f"{x},{y}", draw_dir=args.draw))
        r = results[-1]
        print(f"{view} --person {x},{y}: {r['right']}/{r['tracked']} tracked frames on the performer, "
              f"{r['switches']} switches, {r['tracked']}/{r['frames']} detected, {r['overlap']} overlap frames",
              flush=True)
        if args.auto:
            results.append(run_view(view, "auto"))
    demos_json = ROOT / "bench" / "results" / "identity_demo_runs.json"
    if args.process_demos:
        demos = process_demos(args.process_demos)
        demos_json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                          "load_before": load, "load_after": os.getloadavg()[0], "runs": demos},
                                         indent=1) + "\n")
    # The (heavy) demo runs are kept from the last --process-demos run.
    demo_runs = json.loads(demos_json.read_text()) if demos_json.is_file() else None
    demos = demo_runs["runs"] if demo_runs else []
    lines = ["# Identity on the Pose2Sim multi-person demo", "",
             f"`python bench/identity.py{' --auto' if args.auto else ''}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"load average {load:.1f} at the start (machine shared: timings are not quiet-machine figures).", "",
             "Subject chosen with `--person X,Y` on the performer in frame 0; labels: `LABELS` in the script "
             "(half-planes drawn on every 2nd frame and checked by eye).", "",
             "| view | --person | on the performer (of tracked) | identity switches | detected (of 100 visible) "
             "| lost frames | overlap-flagged frames | identity-doubt frames | wrong frames | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        share = 100.0 * r["right"] / r["tracked"] if r["tracked"] else 0.0
        wrong = ",".join(map(str, r["wrong_frames"][:12])) + (" …" if len(r["wrong_frames"]) > 12 else "")
        lines.append(f"| {r['view']} | {r['person']} | {share:.1f} % ({r['right']}/{r['tracked']}) | {r['switches']} | "
                     f"{100.0 * r['tracked'] / r['frames']:.0f} % | {r['frames'] - r['tracked']} | {r['overlap']} | "
                     f"{r['doubt']} | "
                     f"{wrong or '—'} | {r['seconds']:.1f} |")
    if demos:
        lines += ["", "## Every public demo clip through `sam4dcap process` (--height 1.75 --mass 70)", "",
                  f"Run {demo_runs['date']} (`--process-demos`, one clip at a time, default `--person auto`); load "
                  f"average {demo_runs['load_before']:.1f} before, {demo_runs['load_after']:.1f} after "
                  "(other jobs on the 2 cores: the seconds are not quiet-machine figures).", "",
                  "| clip | exit code | report.html | s | error |", "|---|---|---|---|---|"]
        for d in demos:
            lines.append(f"| {d['clip']} | {d['rc']} | {'yes' if d['report'] else 'no'} | {d['seconds']:.0f} | "
                         f"{d['message'].replace('|', '/')} |")
    chosen = [r for r in results if r["person"] != "auto"]
    total_right = sum(r["right"] for r in chosen)
    total_tracked = sum(r["tracked"] for r in chosen)
    summary = (f"identity: {100.0 * total_right / max(total_tracked, 1):.1f} % of tracked frames on the performer "
               f"(target 100 %), {sum(r['switches'] for r in chosen)} switches (target 0), detected "
               f"{100.0 * total_tracked / max(sum(r['frames'] for r in chosen), 1):.0f} % over 4 views")
    lines += ["", summary, ""]
    out = ROOT / "bench" / "results" / "identity.md"
    out.write_text("\n".join(lines))
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
