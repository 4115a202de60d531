"""The optional GPU backends' loading paths: each missing piece (checkpoint setting, checkpoint
file, MHR asset, mapping, Python package, PyTorch, CUDA) is a `MissingDependencyError` naming it.
Real loading needs a GPU and gated weights: never here."""

import importlib.util

import pytest

from sam4dcap_biomech.errors import MissingDependencyError
from sam4dcap_perception.body_estimator import create_estimator
from sam4dcap_perception.segmentation_sam3 import require_torch_device

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture()
def sam3d_files(tmp_path):
    ckpt = tmp_path / "sam-3d-body" / "model.ckpt"
    (ckpt.parent / "assets").mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    mapping = tmp_path / "mhr2smpl_mapping.npz"
    mapping.write_bytes(b"npz")
    return ckpt, mapping


def test_sam3d_checkpoint_setting_and_file(tmp_path):
    with pytest.raises(MissingDependencyError, match="sam3d_checkpoint"):
        create_estimator({"backend": "sam3d"})
    with pytest.raises(MissingDependencyError, match=r"checkpoint .*absent\.ckpt not found"):
        create_estimator({"backend": "sam3d", "sam3d_checkpoint": str(tmp_path / "absent.ckpt")})


def test_sam3d_mhr_asset_and_mapping(sam3d_files, tmp_path):
    ckpt, mapping = sam3d_files
    with pytest.raises(MissingDependencyError, match=r"assets/mhr_model\.pt not found"):
        create_estimator({"backend": "sam3d", "sam3d_checkpoint": str(ckpt)})
    (ckpt.parent / "assets" / "mhr_model.pt").write_bytes(b"mhr")
    with pytest.raises(MissingDependencyError, match="mhr2smpl_mapping"):
        create_estimator({"backend": "sam3d", "sam3d_checkpoint": str(ckpt)})
    with pytest.raises(MissingDependencyError, match=r"absent\.npz not found"):
        create_estimator({"backend": "sam3d", "sam3d_checkpoint": str(ckpt),
                          "mhr2smpl_mapping": str(tmp_path / "absent.npz")})
    with pytest.raises(MissingDependencyError, match=r"other\.pt not found"):
        create_estimator({"backend": "sam3d", "sam3d_checkpoint": str(ckpt),
                          "sam3d_mhr_model": str(tmp_path / "other.pt"), "mhr2smpl_mapping": str(mapping)})


@pytest.mark.skipif(importlib.util.find_spec("sam_3d_body") is not None, reason="sam_3d_body installed")
def test_sam3d_package_missing(sam3d_files):
    ckpt, mapping = sam3d_files
    (ckpt.parent / "assets" / "mhr_model.pt").write_bytes(b"mhr")
    with pytest.raises(MissingDependencyError, match="package 'sam_3d_body' is not installed"):
        create_estimator({"backend": "sam3d", "sam3d_checkpoint": str(ckpt), "mhr2smpl_mapping": str(mapping)})


def test_sam3_segmentation_checkpoint_and_package(tmp_path):
    with pytest.raises(MissingDependencyError, match="sam3_checkpoint"):
        create_estimator({"segmentation_backend": "sam3"})
    with pytest.raises(MissingDependencyError, match=r"absent\.pt not found"):
        create_estimator({"segmentation_backend": "sam3", "sam3_checkpoint": str(tmp_path / "absent.pt")})
    if importlib.util.find_spec("sam3") is None:
        ckpt = tmp_path / "sam3.pt"
        ckpt.write_bytes(b"weights")
        with pytest.raises(MissingDependencyError, match="package 'sam3' is not installed"):
            create_estimator({"segmentation_backend": "sam3", "sam3_checkpoint": str(ckpt)})


def test_torch_and_cuda_requirement():
    if not HAVE_TORCH:
        with pytest.raises(MissingDependencyError, match="PyTorch is not installed"):
            require_torch_device("cuda", what="x")
    else:
        import torch

        if not torch.cuda.is_available():
            with pytest.raises(MissingDependencyError, match="CUDA is not available"):
                require_torch_device("cuda", what="x")
        assert require_torch_device("cpu", what="x") is torch
