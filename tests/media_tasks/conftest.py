"""Fixtures for the image tests: Pillow's test images (shared/testdata,
beside the repository), a MEDIA_ROOT of the test's own that worker
processes share, and images uploaded through the service."""

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from media_tasks import services
from media_tasks.conf import Options
from media_tasks.models import Image, Rendition
from tests.media_tasks.samples import decoded

# The repository and shared/ are siblings, here and in CI.
TESTDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "testdata" / "images"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"The test images are missing: expected {TESTDATA.resolve()} (shared/ beside the repository).")
    return TESTDATA


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root


@pytest.fixture
def worker_env(worker_env, media_root) -> dict:
    """Worker processes write where the test reads."""
    return {**worker_env, "DJANGO_MEDIA_ROOT": str(media_root)}


@pytest.fixture
def upload(db):
    """upload(data, name="upload.jpg", **options) -> an Image, stored and
    its job enqueued by the service (published only if the test commits)."""

    def make(data: bytes, name: str = "upload.jpg", **options) -> Image:
        return services.image_upload(file=ContentFile(data, name=name), options=Options.from_json(options))

    return make


def stored_files(root: Path) -> set[str]:
    """Every file under MEDIA_ROOT, relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def opened(rendition: Rendition):
    """The rendition's file, decoded."""
    with default_storage.open(rendition.file.name, "rb") as stored:
        return decoded(stored.read())
