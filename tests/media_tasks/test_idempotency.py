"""Running renditions_create again, after a crash or with new settings,
leaves exactly one complete set: never duplicates, never half a set."""

import pytest
from django.core.files.storage import FileSystemStorage
from PIL import Image

from jobs.exceptions import BadInput, TransientError
from media_tasks import services
from media_tasks.models import Rendition
from tests.media_tasks import samples
from tests.media_tasks.conftest import stored_files

pytestmark = pytest.mark.django_db(transaction=True)  # files are deleted on commit


@pytest.fixture(autouse=True)
def no_publishing(monkeypatch):
    """Uploads commit here; their jobs must not reach a broker."""
    monkeypatch.setattr("jobs.publishing.job_publish", lambda job: False)


@pytest.fixture
def photo(upload):
    return upload(samples.encoded(Image.linear_gradient("L").resize((1800, 1200)).convert("RGB")))


def rendition_set(image) -> dict[str, tuple]:
    return {r.name: (r.file.name, r.width, r.height, r.bytes) for r in Rendition.objects.filter(image=image)}


def test_running_twice_leaves_one_set_under_the_same_names(photo, media_root):
    services.renditions_create(image=photo)
    first, files = rendition_set(photo), stored_files(media_root)

    services.renditions_create(image=photo)

    assert rendition_set(photo) == first
    assert stored_files(media_root) == files
    assert len(files) == 4  # the original and three renditions
    assert Rendition.objects.count() == 3


def test_changed_settings_replace_the_set_and_delete_the_old_files(settings, photo, media_root):
    services.renditions_create(image=photo)
    before = rendition_set(photo)

    settings.MEDIA_TASKS_RENDITIONS = {
        **settings.MEDIA_TASKS_RENDITIONS,
        "medium": {"width": 640, "format": "WEBP", "quality": 70},
    }
    del settings.MEDIA_TASKS_RENDITIONS["large"]
    services.renditions_create(image=photo)

    after = rendition_set(photo)
    assert set(after) == {"thumb", "medium"}
    assert after["thumb"] == before["thumb"]
    assert after["medium"][0].endswith(".webp") and after["medium"][1:3] == (640, 427)
    assert stored_files(media_root) == {photo.original.name, after["thumb"][0], after["medium"][0]}


def test_a_storage_failure_mid_set_keeps_the_previous_set_and_a_retry_completes(
    settings, photo, media_root, monkeypatch
):
    services.renditions_create(image=photo)
    before = rendition_set(photo)
    settings.MEDIA_TASKS_RENDITIONS = {
        name: {**definition, "quality": definition["quality"] - 10}
        for name, definition in settings.MEDIA_TASKS_RENDITIONS.items()
    }
    real_save, saved = FileSystemStorage.save, []

    def save_then_fail(self, name, content, **kwargs):
        if len(saved) == 2:
            raise OSError(28, "No space left on device")
        saved.append(name)
        return real_save(self, name, content, **kwargs)

    monkeypatch.setattr(FileSystemStorage, "save", save_then_fail)
    with pytest.raises(TransientError, match="No space left on device"):
        services.renditions_create(image=photo)
    assert rendition_set(photo) == before  # two new files written, no row moved

    monkeypatch.setattr(FileSystemStorage, "save", real_save)
    services.renditions_create(image=photo)
    after = rendition_set(photo)
    assert set(after) == set(before) and all(after[name][0] != before[name][0] for name in after)
    assert stored_files(media_root) == {photo.original.name, *(name for name, *_ in after.values())}


def test_a_half_written_file_left_by_a_crash_is_rewritten(photo, media_root):
    services.renditions_create(image=photo)
    large = Rendition.objects.get(image=photo, name="large")
    path = media_root / large.file.name
    path.write_bytes(path.read_bytes()[:1000])

    services.renditions_create(image=photo)

    assert path.stat().st_size == large.bytes
    assert samples.decoded(path.read_bytes()).size == (1600, 1067)


def test_an_image_deleted_while_its_renditions_were_made_leaves_no_files(photo, media_root, monkeypatch):
    real_store = services._store

    def store_then_delete(storage, name, data):
        photo.__class__.objects.filter(pk=photo.pk).delete()
        return real_store(storage, name, data)

    monkeypatch.setattr(services, "_store", store_then_delete)
    with pytest.raises(BadInput, match="was deleted"):
        services.renditions_create(image=photo)
    assert stored_files(media_root) == {photo.original.name}
