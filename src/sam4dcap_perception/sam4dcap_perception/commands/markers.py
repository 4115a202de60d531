"""Video -> world-frame virtual markers (.trc, metres, OpenSim y-up world).

Runs the body estimator on VIDEO, recovers the body's position per frame from its 2D and 3D
keypoints and the camera intrinsics (a pinhole with --fov horizontal field of view unless the
config says otherwise), scales it to --height, finds the ground and up axis from the feet and
writes the zero-phase filtered markers. Frames without the person are NaN in the TRC.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_arguments(parser):
    parser.add_argument("video", help="video file, image folder, or camera:N")
    parser.add_argument("--height", type=float, metavar="M",
                        help="subject standing height [m]; sets the metric scale (required unless --list-people)")
    parser.add_argument("--out", metavar="FILE.trc", help="output TRC file (required unless --list-people)")
    parser.add_argument("--backend", choices=["blazepose", "sam3d"], default="blazepose",
                        help="body estimator (default: blazepose, embedded, CPU)")
    parser.add_argument("--start", type=float, default=0.0, metavar="S", help="start time in the video [s]")
    parser.add_argument("--end", type=float, default=None, metavar="S", help="end time in the video [s] (default: end)")
    parser.add_argument("--fov", type=float, default=None, metavar="DEG",
                        help="horizontal field of view of the camera [deg] "
                             "(default: video_source_node.horizontal_fov_deg of the config)")
    parser.add_argument("--extrinsics", default=None, metavar="FILE",
                        help="camera extrinsics world<-camera (JSON/YAML) to express the markers in an "
                             "external world instead of the estimated ground frame")
    parser.add_argument("--raw", action="store_true", help="write the unfiltered markers instead of the filtered ones")
    parser.add_argument("--quality", metavar="FILE.json", default=None,
                        help="also write the quality numbers (tracking, scale, ground, camera pose) as JSON")
    parser.add_argument("--config", default=None, metavar="YAML", help="config file (default: config/sam4dcap.yaml)")
    add_person_arguments(parser)


def add_person_arguments(parser):
    """--person / --list-people, shared by `markers` and `process`."""
    parser.add_argument("--person", default=None, metavar="auto|largest|centre|ID|X,Y",
                        help="who the subject is when several people are in view: auto (highest detection score "
                             "on the first frame with people), largest, centre, an id from --list-people, or a "
                             "pixel X,Y on the person in the first frame where they are visible "
                             "(default: body_estimator_node.person of the config)")
    parser.add_argument("--list-people", nargs="?", const="", default=None, metavar="PNG",
                        help="only list the people in the video (id, frames, where) and write a contact sheet "
                             "of their thumbnails to PNG (default: <video>_people.png next to --out, or in the "
                             "current folder); no markers are written")


def list_people_command(video, sheet, args) -> None:
    """Print the tracks of `video` and write their contact sheet."""
    from ..people import describe_tracks, list_people, write_contact_sheet

    tracks, n = list_people(video, start_s=args.start, end_s=args.end, config=_load(args.config))
    print(f"{video}: {len(tracks)} people in {n} frames")
    for line in describe_tracks(tracks, n):
        print(line)
    print(f"contact sheet: {write_contact_sheet(sheet, tracks)}")


def _load(config):
    from sam4dcap_biomech.config import load_config

    return load_config(config) if config else load_config()


def estimator_overrides(args) -> dict:
    """The body estimator parameters the flags set (the person choice, checked here)."""
    from ..tracking import parse_person_choice

    if args.person is None:
        return {}
    return {"person": str(parse_person_choice(args.person))}


def run(args) -> int:
    from sam4dcap_biomech.errors import Sam4dcapError
    from sam4dcap_biomech.settings import check_height_m
    from sam4dcap_biomech.trc import write_trc

    from ..marker_pipeline import video_to_markers

    if args.list_people is not None:
        sheet = Path(args.list_people or (Path(args.out).with_suffix("") if args.out else Path(Path(args.video).stem)))
        if not args.list_people:
            sheet = sheet.with_name(sheet.name + "_people.png")
        list_people_command(args.video, sheet, args)
        return 0
    for flag, value in (("--height", args.height), ("--out", args.out)):
        if value is None:
            raise Sam4dcapError(f"missing {flag} (required unless --list-people)")
    check_height_m(args.height, name="--height")
    out = Path(args.out)
    if out.suffix.lower() != ".trc":
        raise Sam4dcapError(f"--out {out}: the output must be a .trc file")
    result = video_to_markers(args.video, height_m=args.height, backend=args.backend, start_s=args.start,
                              end_s=args.end, config=args.config, progress=False,
                              horizontal_fov_deg=args.fov, extrinsics_file=args.extrinsics,
                              keep_observations=False, estimator_overrides=estimator_overrides(args))
    series = result.raw if args.raw else result.filtered
    write_trc(out, series)
    if args.quality:
        q = dict(result.quality)
        q["world_from_camera"] = result.world_from_camera.matrix.tolist()
        Path(args.quality).write_text(json.dumps(q, indent=2, default=float))
    print(f"{result.quality['frames']} frames, {100 * result.tracked_fraction:.0f}% tracked -> {out}")
    lost = result.quality.get("lost_intervals_s") or []
    if lost:
        where = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in lost[:4]) + (" ..." if len(lost) > 4 else "")
        print(f"warning: person lost in {result.quality['lost_frames']} frames at {where}: NaN rows in the TRC; "
              f"{result.quality['bridged_frames']} frames bridged", file=sys.stderr)
    return 0
