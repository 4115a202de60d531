"""Generate the project's full-body OpenSim model for a subject's height and mass.

Example: sam4dcap model --height 1.75 --mass 70 --markers blazepose33 --out model.osim
"""

from __future__ import annotations

from sam4dcap_biomech.errors import Sam4dcapError

MARKER_CHOICES = "blazepose|blazepose33|opencap43|none|PATH.xml"


def add_arguments(parser):
    parser.add_argument("--height", type=float, required=True, metavar="M",
                        help="standing height of the subject [m], 0.5..2.5")
    parser.add_argument("--mass", type=float, required=True, metavar="KG",
                        help="body mass of the subject [kg], 10..300")
    parser.add_argument("--markers", default="blazepose33", metavar="SET",
                        help=f"marker set on the model: {MARKER_CHOICES} (default blazepose33)")
    parser.add_argument("--sex", default="male", choices=["male", "female"],
                        help="de Leva 1996 table to use (default male)")
    parser.add_argument("--out", required=True, metavar="PATH.osim", help="output model file (.osim)")
    parser.add_argument("--name", default=None, help="model name (default derived from height and mass)")


def run(args) -> int:
    from sam4dcap_biomech.model_builder import build_model, standing_height_m

    if not str(args.out).lower().endswith(".osim"):
        raise Sam4dcapError(f"--out {args.out} must end in .osim")
    from pathlib import Path

    model = build_model(height_m=args.height, mass_kg=args.mass, markers=args.markers, name=args.name,
                        sex=args.sex)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        written = model.printToXML(str(out))
    except RuntimeError:  # OpenSim's "Failed to write to the Xml file" (read-only, full disk)
        written = False
    if not written:
        raise Sam4dcapError(f"could not write the model to {out}: check the folder is writable and the disk not full")
    state = model.initSystem()
    print(f"{out}: height {standing_height_m(model):.3f} m, mass {model.getTotalMass(state):.2f} kg, "
          f"{model.getMarkerSet().getSize()} markers ({args.markers})")
    return 0
