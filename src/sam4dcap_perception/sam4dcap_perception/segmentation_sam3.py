"""Optional person-mask backend: SAM 3 (facebookresearch/sam3), GPU, user-supplied checkpoint.

Selected by `body_estimator_node.segmentation_backend: sam3`. The prompt is the auto-prompt of
the body estimator (person box + centroid point), so SAM 3 segments the same person:
  * `propagate(video, prompt)`: SAM 3 video propagation over a whole file from the prompt's
    frame (the offline path: `build_sam3_video_predictor`, start_session / add_prompt /
    propagate_in_video);
  * `segment(frame, prompt, box)`: per-frame masks for the live stream (the video predictor
    needs the whole clip up front), from SAM 3's image model prompted with the tracked box.
Nothing here is imported unless the backend is selected: torch and sam3 load inside the
constructor, and every missing piece (checkpoint path, package, CUDA) is reported by
`MissingDependencyError` naming it. Never run in CI (no GPU there).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sam4dcap_biomech.errors import MissingDependencyError

from .observations import Frame, Prompt

log = logging.getLogger(__name__)


def require_checkpoint(path: str, *, param: str, what: str) -> Path:
    """A user-supplied weights file: set, and present."""
    if not str(path).strip():
        raise MissingDependencyError(
            f"{what}: no checkpoint configured; set body_estimator_node.{param} to the downloaded "
            "weights file (weights are gated and not shipped)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingDependencyError(f"{what}: checkpoint {p} not found (body_estimator_node.{param})")
    return p


def require_package(module: str, *, what: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(f"{what}: Python package '{module}' is not installed ({install})")


def require_torch_device(device: str, *, what: str):
    """torch, imported lazily, and the requested device (CUDA must really be there)."""
    if importlib.util.find_spec("torch") is None:
        raise MissingDependencyError(f"{what}: PyTorch is not installed (pip install torch==2.13.0 "
                                     "with CUDA; the embedded blazepose backend needs none)")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MissingDependencyError(f"{what}: CUDA is not available (torch {torch.__version__}, "
                                     f"device={device}); use a GPU machine or the blazepose backend")
    return torch


def _box_cxcywh_norm(box, width: int, height: int) -> list[float]:
    x0, y0, x1, y1 = box
    return [0.5 * (x0 + x1) / width, 0.5 * (y0 + y1) / height, (x1 - x0) / width, (y1 - y0) / height]


class Sam3Segmenter:
    what = "SAM 3 segmentation backend"

    def __init__(self, params: dict):
        self.checkpoint = require_checkpoint(params.get("sam3_checkpoint", ""), param="sam3_checkpoint",
                                             what=self.what)
        require_package("sam3", what=self.what,
                        install="install it from github.com/facebookresearch/sam3 into the venv")
        self.device = str(params.get("device", "cuda"))
        self.torch = require_torch_device(self.device, what=self.what)
        from sam3.model.sam3_image_processor import Sam3Processor
        from sam3.model_builder import build_sam3_image_model

        model = build_sam3_image_model(checkpoint_path=str(self.checkpoint), load_from_HF=False,
                                       device=self.device, eval_mode=True)
        self.processor = Sam3Processor(model)
        self._video_predictor: Any = None

    # --- live stream ------------------------------------------------------------------------
    def segment(self, frame: Frame, prompt: Prompt | None, *, tracked: bool = True,
                box=None) -> np.ndarray | None:
        """uint8 mask (255 = person) of the prompted person in this frame, None when there is no
        prompt yet. `box` (the tracked box of this frame) defaults to the prompt's box."""
        if prompt is None:
            return None
        h, w = frame.image.shape[:2]
        from PIL import Image

        state = self.processor.set_image(Image.fromarray(frame.image))
        out = self.processor.add_geometric_prompt(
            box=_box_cxcywh_norm(box or prompt.box_xyxy, w, h), label=True, state=state)
        masks, scores = out.get("masks"), out.get("scores")
        if masks is None or len(masks) == 0:
            return np.zeros((h, w), np.uint8)
        best = int(self.torch.as_tensor(scores).argmax())
        m = masks[best].squeeze().float().cpu().numpy()
        return np.where(m > 0.5, 255, 0).astype(np.uint8)

    # --- offline: video propagation ---------------------------------------------------------
    def propagate(self, video_path: str | Path, prompt: Prompt, *, frame_index: int = 0,
                  width: int, height: int) -> Iterator[tuple[int, np.ndarray]]:
        """(frame index, uint8 mask) for every frame of `video_path`, SAM 3 video propagation of
        the prompted person (box + positive point on `frame_index`)."""
        if self._video_predictor is None:
            from sam3.model_builder import build_sam3_video_predictor

            gpu = int(self.device.split(":")[1]) if ":" in self.device else 0
            self._video_predictor = build_sam3_video_predictor(
                checkpoint_path=str(self.checkpoint), gpus_to_use=[gpu])
        pred = self._video_predictor
        session = pred.handle_request({"type": "start_session", "resource_path": str(video_path)})["session_id"]
        try:
            x0, y0, x1, y1 = prompt.box_xyxy
            pred.handle_request({
                "type": "add_prompt", "session_id": session, "frame_index": int(frame_index), "obj_id": 1,
                "bounding_boxes": [[x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height]],
                "bounding_box_labels": [1],
                "points": (prompt.points / np.array([width, height])).tolist(),
                "point_labels": prompt.labels.astype(int).tolist()})
            for res in pred.handle_stream_request({"type": "propagate_in_video", "session_id": session}):
                outputs = res.get("outputs", res)
                ids = list(np.asarray(outputs.get("out_obj_ids", [])))
                masks = outputs.get("out_binary_masks")
                if masks is None or 1 not in ids:
                    yield int(res["frame_index"]), np.zeros((height, width), np.uint8)
                    continue
                m = np.asarray(masks[ids.index(1)])
                yield int(res["frame_index"]), np.where(m > 0, 255, 0).astype(np.uint8)
        finally:
            pred.handle_request({"type": "close_session", "session_id": session})

    def close(self) -> None:
        self.processor = None
        self._video_predictor = None
