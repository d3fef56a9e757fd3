"""The image API: multipart uploads answered 202 with the job, size limits
answered 413 before anything is stored, and status per image and batch."""

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.authtoken.models import Token

from jobs.models import Job, JobStatus
from media_tasks import services
from media_tasks.models import Image, ImageBatch
from tests.media_tasks.conftest import stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def hopper(testdata) -> bytes:
    return (testdata / "hopper.jpg").read_bytes()


def jpeg(data: bytes, name: str = "hopper.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


@pytest.fixture
def uploader(django_user_model):
    """A non-staff user who may upload images and nothing more."""
    user = django_user_model.objects.create_user("uploader", password="pw-123456")
    user.user_permissions.add(Permission.objects.get(codename="add_image"))
    return user


def test_an_upload_answers_202_with_the_job_and_the_image_location(admin_client, hopper):
    response = admin_client.post("/api/images/", {"file": jpeg(hopper), "format": "WEBP", "quality": "70"})

    assert response.status_code == 202
    image = Image.objects.get()
    body = response.json()
    assert response["Location"] == body["url"] == f"http://testserver/api/images/{image.id}/"
    assert (body["status"], body["original_name"], body["renditions"]) == ("PENDING", "hopper.jpg", [])
    assert body["job"]["id"] == str(image.job_id) and body["job"]["task"] == "media_tasks.renditions_create"
    assert image.options == {"format": "WEBP", "quality": 70, "strip_metadata": True}


def test_an_image_shows_its_status_and_renditions(admin_client, hopper):
    image_id = admin_client.post("/api/images/", {"file": jpeg(hopper)}).json()["id"]
    image = Image.objects.get(pk=image_id)
    services.renditions_create(image=image)
    Job.objects.filter(pk=image.job_id).update(status=JobStatus.SUCCESS, progress=100)

    body = admin_client.get(f"/api/images/{image_id}/").json()

    assert (body["status"], body["format"], body["width"], body["height"]) == ("SUCCESS", "JPEG", 128, 128)
    assert {r["name"]: (r["width"], r["height"], r["format"]) for r in body["renditions"]} == {
        "thumb": (128, 128, "JPEG"),
        "medium": (128, 128, "JPEG"),
        "large": (128, 128, "JPEG"),
    }
    assert all(r["url"] == f"http://testserver/api/images/{image_id}/files/{r['name']}" for r in body["renditions"])


def test_a_batch_answers_202_with_one_status_url(admin_client, hopper, testdata):
    files = [jpeg(hopper, "a.jpg"), jpeg((testdata / "flower.jpg").read_bytes(), "b.jpg")]
    response = admin_client.post("/api/images/batches/", {"files": files})

    assert response.status_code == 202
    batch = ImageBatch.objects.get()
    body = response.json()
    assert response["Location"] == body["url"] == f"http://testserver/api/images/batches/{batch.id}/"
    assert (body["status"], body["total"], body["counts"]) == ("PENDING", 2, {"PENDING": 2})
    assert sorted(image["original_name"] for image in body["images"]) == ["a.jpg", "b.jpg"]

    first = batch.images.order_by("created_at").first()
    Job.objects.filter(pk=first.job_id).update(status=JobStatus.FAILURE, error="BadInput: broken")
    body = admin_client.get(body["url"]).json()
    assert (body["status"], body["progress"]["percent"], body["counts"]) == (
        "STARTED",
        50,
        {"FAILURE": 1, "PENDING": 1},
    )
    assert [image["error"] for image in body["images"]] == ["BadInput: broken", None]


def test_a_body_larger_than_the_limit_is_refused_with_413_before_it_is_read(settings, admin_client, media_root):
    settings.MEDIA_TASKS_MAX_UPLOAD_BYTES = 1000
    response = admin_client.post("/api/images/", {"file": jpeg(b"x" * 70_000)})

    assert response.status_code == 413
    assert "at most 1 file(s) of 1,000 bytes each" in response.json()["detail"]
    assert not stored_files(media_root) and not Image.objects.exists()


def test_one_oversized_file_in_a_batch_is_refused_with_413_naming_it(settings, admin_client, hopper, media_root):
    settings.MEDIA_TASKS_MAX_UPLOAD_BYTES = 10_000  # the whole body passes, one file does not
    response = admin_client.post(
        "/api/images/batches/", {"files": [jpeg(hopper, "ok.jpg"), jpeg(b"x" * 10_001, "huge.jpg")]}
    )

    assert response.status_code == 413
    assert response.json()["detail"] == "'huge.jpg' is larger than 10,000 bytes."
    assert not stored_files(media_root) and not ImageBatch.objects.exists()


def test_a_browser_session_with_csrf_checks_gets_the_same_413(settings, admin_user):
    # The session's CSRF check reads the form before the view runs: the
    # limit must already be in place, and a token after the file still read.
    settings.MEDIA_TASKS_MAX_UPLOAD_BYTES = 10_000
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    browser.get("/admin/")
    token = browser.cookies["csrftoken"].value
    files = [jpeg(b"x" * 100, "ok.jpg"), jpeg(b"x" * 10_001, "huge.jpg")]

    response = browser.post("/api/images/batches/", {"files": files, "csrfmiddlewaretoken": token})

    assert response.status_code == 413
    assert response.json()["detail"] == "'huge.jpg' is larger than 10,000 bytes."


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({}, "file", "Send exactly one file"),
        ({"format": "BMP"}, "format", "not a valid choice"),
        ({"quality": "100"}, "quality", "less than or equal to 95"),
        ({"watermark_image": "nope"}, "options", "unknown watermark image 'nope'"),
        ({"watermark_text": "x", "watermark_position": "middle"}, "watermark_position", "not a valid choice"),
    ],
)
def test_bad_requests_get_400_with_the_reason(admin_client, hopper, form, field, message):
    if field != "file":
        form = {**form, "file": jpeg(hopper)}
    response = admin_client.post("/api/images/", form)
    assert response.status_code == 400
    assert message in str(response.json()[field])
    assert not Image.objects.exists()


def test_too_many_files_in_a_batch_get_400(settings, admin_client, hopper):
    settings.MEDIA_TASKS_MAX_BATCH_FILES = 2
    response = admin_client.post("/api/images/batches/", {"files": [jpeg(hopper, f"{n}.jpg") for n in range(3)]})
    assert response.status_code == 400
    assert response.json()["files"] == "3 files; a batch takes at most 2"
    assert not Image.objects.exists()


def test_anonymous_users_get_nothing(client, hopper):
    assert client.post("/api/images/", {"file": jpeg(hopper)}).status_code in (401, 403)
    assert client.get("/api/images/").status_code in (401, 403)
    assert not Image.objects.exists()


def test_uploading_needs_the_add_image_permission(client, django_user_model, hopper):
    client.force_login(django_user_model.objects.create_user("reader", password="pw-123456"))
    response = client.post("/api/images/", {"file": jpeg(hopper)})
    assert response.status_code == 403
    assert "media_tasks.add_image" in response.json()["detail"]


def test_a_token_user_sees_their_own_images_and_not_others(client, uploader, django_user_model, hopper):
    token = Token.objects.create(user=uploader)
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    mine = client.post("/api/images/", {"file": jpeg(hopper)}, **auth).json()["id"]
    theirs = services.image_upload(file=jpeg(hopper), requested_by=django_user_model.objects.create_user("other"))

    assert client.get(f"/api/images/{mine}/", **auth).status_code == 200
    assert client.get(f"/api/images/{theirs.id}/", **auth).status_code == 404
    assert [image["id"] for image in client.get("/api/images/", **auth).json()["results"]] == [mine]
