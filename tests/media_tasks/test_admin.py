"""Images in the admin: the list, the read-only page with its renditions,
the upload page that enqueues, and the regenerate action."""

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs.models import Job, JobStatus
from media_tasks import services
from media_tasks.models import Image, ImageBatch

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:media_tasks_image_changelist")
ADD = reverse("admin:media_tasks_image_add")


@pytest.fixture
def hopper(testdata) -> bytes:
    return (testdata / "hopper.jpg").read_bytes()


def jpeg(data: bytes, name: str = "hopper.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


def test_the_list_shows_each_image_with_its_job_status(admin_client, hopper):
    image = services.image_upload(file=jpeg(hopper, "summer.jpg"))
    Job.objects.filter(pk=image.job_id).update(status=JobStatus.FAILURE)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert "summer.jpg" in response.text
    assert '<span class="job-status"' in response.text and "FAILURE" in response.text


def test_the_image_page_is_read_only_and_lists_its_renditions(admin_client, hopper):
    image = services.image_upload(file=jpeg(hopper))
    services.renditions_create(image=image)

    response = admin_client.get(reverse("admin:media_tasks_image_change", args=[image.pk]))

    assert response.status_code == 200
    for rendition in image.renditions.all():
        assert f'src="/api/images/{image.pk}/files/{rendition.name}"' in response.text
    assert 'name="_save"' not in response.text


def test_the_add_page_uploads_one_image_and_enqueues_its_job(admin_client, admin_user, hopper):
    assert admin_client.get(ADD).status_code == 200

    response = admin_client.post(
        ADD,
        {
            "files": jpeg(hopper),
            "format": "WEBP",
            "strip_metadata": "on",
            "watermark_position": "center",
            "watermark_opacity": "0.5",
        },
    )

    assert response.status_code == 302 and response["Location"] == CHANGELIST
    image = Image.objects.get()
    assert (image.options["format"], image.requested_by, image.job.requested_by) == ("WEBP", admin_user, admin_user)
    assert LogEntry.objects.get().action_flag == ADDITION


def test_the_add_page_uploads_several_images_as_one_batch(admin_client, hopper):
    admin_client.post(
        ADD,
        {
            "files": [jpeg(hopper, "a.jpg"), jpeg(hopper, "b.jpg")],
            "watermark_position": "center",
            "watermark_opacity": "0.5",
        },
    )
    assert ImageBatch.objects.get().images.count() == 2
    assert Job.objects.count() == 2


def test_uploading_in_the_admin_needs_the_add_permission(client, django_user_model, hopper):
    staff = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_image"))
    client.force_login(staff)

    assert client.get(CHANGELIST).status_code == 200
    assert client.post(ADD, {"files": jpeg(hopper)}).status_code == 403
    assert not Image.objects.exists()


def test_regenerating_enqueues_a_new_job_and_logs_it(admin_client, hopper):
    image = services.image_upload(file=jpeg(hopper))
    Job.objects.filter(pk=image.job_id).update(status=JobStatus.SUCCESS)

    admin_client.post(CHANGELIST, {"action": "regenerate", "_selected_action": [str(image.pk)]})

    image.refresh_from_db()
    assert Job.objects.count() == 2 and image.job.status == JobStatus.PENDING
    assert LogEntry.objects.get(action_flag=CHANGE).change_message == f"Regenerating renditions as job {image.job_id}."


def test_the_batch_page_shows_its_status(admin_client, hopper):
    batch = services.batch_upload(files=[jpeg(hopper, "a.jpg"), jpeg(hopper, "b.jpg")])
    response = admin_client.get(reverse("admin:media_tasks_imagebatch_change", args=[batch.pk]))
    assert response.status_code == 200
    assert "0 of 2 images finished" in response.text
