"""Test hygiene for every package (pytest rootdir): ROS isolation and the cached demo data.

Runs before any test module imports rclpy: each test run gets its own ROS_DOMAIN_ID, DDS
discovery stays on loopback, ROS logs go to a temp dir.
"""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
# Isolated per run: two runs on one machine never see each other's topics.
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="sam4dcap-roslog-"))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_profiles.xml"))
os.environ.setdefault("SAM4DCAP_CONFIG", str(ROOT / "config" / "sam4dcap.yaml"))
os.environ.setdefault("MPLBACKEND", "Agg")
# `import opensim` rewrites LD_LIBRARY_PATH in os.environ, which hides the ROS wheels' libraries
# from child processes; without this flag a child's ros_wheels_bootstrapper rebuilds the path.
os.environ.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)

CACHE = Path(os.environ.get("SAM4DCAP_CACHE", ROOT / ".cache"))


def _clean_dead_dds_shared_memory():
    # Tests kill nodes on purpose; each dead DDS participant leaves 64 MB in /dev/shm.
    from sam4dcap_biomech.ros.shm_recovery import remove_dead_segments

    remove_dead_segments()


def pytest_sessionstart(session):
    _clean_dead_dds_shared_memory()


def pytest_sessionfinish(session, exitstatus):
    _clean_dead_dds_shared_memory()


@pytest.fixture(scope="session")
def pose2sim_demo() -> Path:
    """The Pose2Sim single-person demo (videos/cam01..04.mp4, calibration/Calib.qca.txt)."""
    d = CACHE / "pose2sim_demo"
    if not (d / ".complete").is_file():
        pytest.fail(f"test videos missing in {d}: run `make setup` (scripts/fetch_test_data.sh)")
    return d


@pytest.fixture(scope="session")
def pose2sim_multi() -> Path:
    """The Pose2Sim multi-person demo (videos/cam01..04.mp4: a performer and a bystander,
    calibration/Calib.qca.txt)."""
    d = CACHE / "pose2sim_multi"
    if not (d / ".complete").is_file():
        pytest.fail(f"test videos missing in {d}: run `make setup` (scripts/fetch_test_data.sh)")
    return d


@pytest.fixture(scope="session")
def demo_video(pose2sim_demo) -> Path:
    """One real video: cam01 of the Pose2Sim demo (60 fps, 1080x1920 portrait)."""
    return pose2sim_demo / "videos" / "cam01.mp4"
