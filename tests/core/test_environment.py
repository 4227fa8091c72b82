"""The installed environment makes the artifacts that dvc.lock records."""

from importlib import metadata

import cv2

OPENCV_DISTRIBUTIONS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python")


def test_every_installed_opencv_distribution_is_the_cv2_that_imports():
    # All three install the same cv2 folder and the last one installed wins; cv2's warpAffine makes the
    # golden and calibration crops, so a second build beside it changes artifact hashes by install order.
    installed = {}
    for dist in OPENCV_DISTRIBUTIONS:
        try:
            installed[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    assert "opencv-python-headless" in installed
    other_builds = {dist: v for dist, v in installed.items() if not v.startswith(f"{cv2.__version__}.")}
    assert not other_builds, f"cv2 {cv2.__version__} imports, but these OpenCV builds are installed too: {other_builds}"
