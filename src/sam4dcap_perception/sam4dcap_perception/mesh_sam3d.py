"""Optional mesh backend: SAM 3D Body (facebookresearch/sam-3d-body), GPU, user-supplied weights.

Selected by `body_estimator_node.backend: sam3d`. Per frame: the tracked person's box (same
auto-prompt and tracking rules as the embedded backend, from the bundled person detector) goes
to `SAM3DBodyEstimator.process_one_image`, which returns MHR LOD1 vertices (18,439, metres) and
the camera translation. The mesh in the camera frame (vertices + translation; OpenCV axes: x
right, y down, z forward) is mapped to SMPL topology with MHR's mhr2smpl_mapping.npz and the
43 OpenCap markers are read off it (`mhr_markers`). The observation carries
`skeleton="opencap43"`, `keypoints_3d` = the 43 markers in the camera frame [m] (not
hip-centred), `keypoints_2d` their projections, `mesh_model="MHR"`, `mesh_vertices`,
`camera_translation`.

torch and sam_3d_body are imported inside the constructor; missing checkpoint, MHR asset,
mapping, package or CUDA raise `MissingDependencyError` naming the piece. Never run in CI.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sam4dcap_biomech.errors import MissingDependencyError, Sam4dcapError
from sam4dcap_biomech.markersets import OPENCAP43

from .mhr_markers import N_MHR_VERTICES, SmplMapping, opencap_markers_from_smpl_vertices
from .observations import BodyObservation, Frame
from .person_detector import PersonDetector
from .segmentation_sam3 import require_checkpoint, require_package, require_torch_device
from .tracking import PromptTracker
from .video_source import as_rgb8

log = logging.getLogger(__name__)


class Sam3dBodyEstimator:
    backend = "sam3d"
    what = "SAM 3D Body mesh backend"

    def __init__(self, params: dict):
        self.params = params
        self.checkpoint = require_checkpoint(params.get("sam3d_checkpoint", ""), param="sam3d_checkpoint",
                                             what=self.what)
        mhr = str(params.get("sam3d_mhr_model", "")).strip()
        self.mhr_model = Path(mhr).expanduser() if mhr else self.checkpoint.parent / "assets" / "mhr_model.pt"
        if not self.mhr_model.is_file():
            raise MissingDependencyError(
                f"{self.what}: MHR body model {self.mhr_model} not found (set "
                "body_estimator_node.sam3d_mhr_model; it ships with the checkpoint as assets/mhr_model.pt)")
        if not str(params.get("mhr2smpl_mapping", "")).strip():
            raise MissingDependencyError(
                f"{self.what}: set body_estimator_node.mhr2smpl_mapping to MHR's mhr2smpl_mapping.npz "
                "(github.com/facebookresearch/MHR, tools/mhr_smpl_conversion/assets) for the 43 markers")
        mapping_path = Path(params["mhr2smpl_mapping"]).expanduser()
        if not mapping_path.is_file():
            raise MissingDependencyError(f"{self.what}: MHR->SMPL mapping {mapping_path} not found "
                                         "(body_estimator_node.mhr2smpl_mapping)")
        require_package("sam_3d_body", what=self.what,
                        install="install it from github.com/facebookresearch/sam-3d-body into the venv")
        self.device = str(params.get("device", "cuda"))
        self.torch = require_torch_device(self.device, what=self.what)

        from sam_3d_body import SAM3DBodyEstimator, load_sam_3d_body

        model, cfg = load_sam_3d_body(str(self.checkpoint), device=self.device, mhr_path=str(self.mhr_model))
        self.estimator = SAM3DBodyEstimator(sam_3d_body_model=model, model_cfg=cfg)
        self.faces = np.asarray(self.estimator.faces)
        self.mapping = SmplMapping(mapping_path, faces=self.faces)
        self.detector: PersonDetector | None = PersonDetector(min_score=float(params["min_detection_confidence"]))
        self.tracker = PromptTracker(person_id=int(params["person_id"]),
                                     prompt_min_score=float(params["prompt_min_score"]),
                                     max_jump=float(params["track_max_jump"]),
                                     relock_s=float(params["track_relock_s"]))

    def process(self, frame: Frame) -> BodyObservation:
        image = as_rgb8(frame.image, name=f"frame {frame.index}")
        h, w = image.shape[:2]
        if self.detector is None:
            raise Sam4dcapError("the sam3d estimator is closed")
        det = self.tracker.select(self.detector.detect(image), frame.time_s)
        if det is None:
            self.tracker.mark_lost()
            return self._untracked(frame, (h, w), "no person" if self.tracker.last is None else "tracked person not found")
        outputs = self.estimator.process_one_image(image, bboxes=np.asarray(det.box_xyxy, dtype=np.float32)[None])
        if not outputs:
            self.tracker.mark_lost()
            return self._untracked(frame, (h, w), "SAM 3D Body returned no person")
        out = outputs[0]
        verts = np.asarray(out["pred_vertices"], dtype=float)
        if verts.shape != (N_MHR_VERTICES, 3):
            raise MissingDependencyError(f"{self.what}: expected MHR LOD1 vertices ({N_MHR_VERTICES}, 3), "
                                         f"got {verts.shape}: a different checkpoint/LOD?")
        cam_t = np.asarray(out["pred_cam_t"], dtype=float).reshape(3)
        verts_cam = verts + cam_t
        markers = opencap_markers_from_smpl_vertices(self.mapping(verts_cam))
        kp3 = np.stack([markers[n] for n in OPENCAP43])
        f = float(np.asarray(out["focal_length"]).reshape(-1)[0])
        kp2 = f * kp3[:, :2] / kp3[:, 2:3] + np.array([w / 2.0, h / 2.0])
        self.tracker.accept(det.box_xyxy, frame.time_s)
        mask = np.zeros((h, w), np.uint8)
        if out.get("mask") is not None:
            mask[np.asarray(out["mask"]).reshape(h, w) > 0] = 255
        ones = np.ones(len(OPENCAP43))
        return BodyObservation(
            frame_index=frame.index, time_s=frame.time_s, person_id=self.tracker.person_id, tracked=True,
            skeleton="opencap43", names=OPENCAP43, keypoints_2d=kp2, keypoints_3d=kp3,
            confidence=ones, visibility=ones.copy(), mask=mask, box_xyxy=det.box_xyxy, score=det.score,
            prompt=self.tracker.prompt, backend=self.backend, mesh_model="MHR", mesh_vertices=verts_cam,
            camera_translation=cam_t, extra={"focal_length_px": f, "keypoints_3d_frame": "camera",
                                              "topology_id": "MHR_LOD1", "faces": self.faces})

    def _untracked(self, frame: Frame, shape, reason: str) -> BodyObservation:
        k = len(OPENCAP43)
        return BodyObservation(
            frame_index=frame.index, time_s=frame.time_s, person_id=self.tracker.person_id, tracked=False,
            skeleton="opencap43", names=OPENCAP43, keypoints_2d=np.full((k, 2), np.nan),
            keypoints_3d=np.full((k, 3), np.nan), confidence=np.full(k, np.nan),
            visibility=np.full(k, np.nan), mask=np.zeros(shape, np.uint8), prompt=self.tracker.prompt,
            backend=self.backend, extra={"reason": reason})

    def close(self) -> None:
        detector = getattr(self, "detector", None)
        if detector is not None:
            detector.close()
            self.detector = None
        self.estimator = None
