"""Fixtures shared by the biomech node tests."""
import pytest
from ros_harness import Harness


@pytest.fixture
def ros(request):
    """A probe node (publishers/subscribers for one test) named after the test module."""
    harness = Harness(request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_ros_") + "_test")
    yield harness
    harness.close()
