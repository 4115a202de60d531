"""The biomechanical twin for display: an OpenSim model posed by IK coordinates -> bone segments.

    poser = ModelPoser("subject.osim")
    bones = poser.bones(names, q)      # [(parent body, child body, start (3,), end (3,))]

Each bone runs from a body's origin to the origin of a body jointed to it (the joint centre
on the child side), in the model's ground frame (OpenSim: y up, metres) -- the frame the
markers are published in ("world"). ROS-free; used by the visualization node.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

log = logging.getLogger(__name__)


class ModelPoser:
    def __init__(self, model_path: str):
        import opensim as osim

        try:
            self.model = osim.Model(str(model_path))
            self.state = self.model.initSystem()
        except Exception as exc:  # noqa: BLE001 - OpenSim raises plain RuntimeErrors
            raise Sam4dcapError(f"cannot load model {model_path}: {exc}") from None
        self.name = self.model.getName()
        cs = self.model.getCoordinateSet()
        self.coordinates = {cs.get(i).getName(): cs.get(i) for i in range(cs.getSize())}
        bs = self.model.getBodySet()
        self.bodies = [bs.get(i) for i in range(bs.getSize())]
        self.edges: list[tuple[str, str]] = []
        js = self.model.getJointSet()
        for i in range(js.getSize()):
            j = js.get(i)
            parent = j.getParentFrame().findBaseFrame().getName()
            child = j.getChildFrame().findBaseFrame().getName()
            if parent != "ground":
                self.edges.append((parent, child))
        self._unknown_warned = False

    def body_origins(self, names: Sequence[str], q: Sequence[float]) -> dict[str, np.ndarray]:
        """Ground-frame origin of every body with the coordinates `names` set to `q` (rad, m)."""
        unknown = []
        for n, v in zip(names, q):
            c = self.coordinates.get(n)
            if c is None:
                unknown.append(n)
                continue
            if np.isfinite(v):
                c.setValue(self.state, float(v), False)  # no constraint projection: display only
        if unknown and not self._unknown_warned:
            log.warning("coordinates not in model %s: %s", self.name, ", ".join(unknown[:5]))
            self._unknown_warned = True
        self.model.realizePosition(self.state)
        out = {}
        for b in self.bodies:
            p = b.getPositionInGround(self.state)
            out[b.getName()] = np.array([p.get(0), p.get(1), p.get(2)])
        return out

    def bones(self, names: Sequence[str], q: Sequence[float]) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
        origins = self.body_origins(names, q)
        return [(a, b, origins[a], origins[b]) for a, b in self.edges if a in origins and b in origins]
