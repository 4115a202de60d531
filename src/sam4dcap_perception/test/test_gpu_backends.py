"""The optional GPU backends' loading paths: each missing piece (checkpoint setting, checkpoint
file, MHR asset, mapping, Python package, PyTorch, CUDA) is a `MissingDependencyError` naming it.
Real loading needs a GPU and gated weights: never here. Every check runs on every machine: a
package that is installed is hidden from the import system for the test (`hide_packages`), so
a machine with the GPU stack still checks the message its users without it get."""

import importlib.util

import pytest

from sam4dcap_biomech.errors import MissingDependencyError
from sam4dcap_perception.body_estimator import create_estimator
from sam4dcap_perception.segmentation_sam3 import require_torch_device

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture()
def hide_packages(monkeypatch):
    """hide_packages("sam3", ...): importlib.util.find_spec answers None for them, as on a
    machine where they are not installed (the backends look packages up with it)."""
    real = importlib.util.find_spec

    def hide(*names):
        def find_spec(name, package=None):
            return None if name.split(".")[0] in names else real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


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


def test_sam3d_package_missing(sam3d_files, hide_packages):
    hide_packages("sam_3d_body")
    ckpt, mapping = sam3d_files
    (ckpt.parent / "assets" / "mhr_model.pt").write_bytes(b"mhr")
    with pytest.raises(MissingDependencyError, match="package 'sam_3d_body' is not installed"):
        create_estimator({"backend": "sam3d", "sam3d_checkpoint": str(ckpt), "mhr2smpl_mapping": str(mapping)})


def test_sam3_segmentation_checkpoint_and_package(tmp_path, hide_packages):
    with pytest.raises(MissingDependencyError, match="sam3_checkpoint"):
        create_estimator({"segmentation_backend": "sam3"})
    with pytest.raises(MissingDependencyError, match=r"absent\.pt not found"):
        create_estimator({"segmentation_backend": "sam3", "sam3_checkpoint": str(tmp_path / "absent.pt")})
    hide_packages("sam3")
    ckpt = tmp_path / "sam3.pt"
    ckpt.write_bytes(b"weights")
    with pytest.raises(MissingDependencyError, match="package 'sam3' is not installed"):
        create_estimator({"segmentation_backend": "sam3", "sam3_checkpoint": str(ckpt)})


def test_torch_missing_is_named(hide_packages):
    hide_packages("torch")
    with pytest.raises(MissingDependencyError, match="PyTorch is not installed"):
        require_torch_device("cuda", what="x")
    with pytest.raises(MissingDependencyError, match="PyTorch is not installed"):
        require_torch_device("cpu", what="x")


@pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is not installed: the device checks need it")
def test_cuda_requirement(monkeypatch):
    import torch

    assert require_torch_device("cpu", what="x") is torch
    if torch.cuda.is_available():
        assert require_torch_device("cuda", what="x") is torch
    # Without CUDA (as on a CPU machine, or a GPU machine whose driver is missing): named.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MissingDependencyError, match="CUDA is not available"):
        require_torch_device("cuda", what="x")
