"""Originals and renditions are served only to who may see the image (its
owner, users with media_tasks.view_image), through the authorised view;
nothing under MEDIA_ROOT is reachable by its path, in DEBUG or not."""

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from rest_framework.authtoken.models import Token

from media_tasks import services
from media_tasks.models import Image

pytestmark = pytest.mark.django_db


@pytest.fixture
def users(django_user_model):
    made = {}
    for name, codenames in [("owner", ["add_image"]), ("stranger", ["add_image"]), ("viewer", ["view_image"])]:
        user = django_user_model.objects.create_user(name, password="pw-123456")
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
        made[name] = user
    return made


@pytest.fixture
def image(client, users, testdata) -> Image:
    client.force_login(users["owner"])
    upload = SimpleUploadedFile("holiday.jpg", (testdata / "hopper.jpg").read_bytes())
    response = client.post("/api/images/", {"file": upload})
    assert response.status_code == 202
    image = Image.objects.get(pk=response.json()["id"])
    services.renditions_create(image=image)
    client.logout()
    return image


def urls(image: Image) -> list[str]:
    names = ["original", *image.renditions.values_list("name", flat=True)]
    return [f"/api/images/{image.pk}/files/{name}" for name in names]


def test_the_owner_and_a_viewer_get_the_files_with_private_headers(client, users, image, testdata):
    for who in ("owner", "viewer"):
        client.force_login(users[who])
        for url in urls(image):
            response = client.get(url)
            assert response.status_code == 200, (who, url)
            body = b"".join(response.streaming_content)
            assert response["Cache-Control"] == "private, no-store"
            assert response["X-Content-Type-Options"] == "nosniff"
            if url.endswith("/original"):
                assert body == (testdata / "hopper.jpg").read_bytes()
                assert response["Content-Disposition"].startswith("attachment")
            else:
                assert response["Content-Type"] == "image/jpeg" and body[:3] == b"\xff\xd8\xff"


def test_a_stranger_an_anonymous_caller_and_a_bad_token_get_nothing(client, users, image):
    client.force_login(users["stranger"])
    assert {client.get(url).status_code for url in urls(image)} == {404}
    client.logout()
    assert {client.get(url).status_code for url in urls(image)} <= {401, 403}
    assert {client.get(url, HTTP_AUTHORIZATION="Token nope").status_code for url in urls(image)} <= {401, 403}
    token = Token.objects.create(user=users["owner"])
    assert {client.get(url, HTTP_AUTHORIZATION=f"Token {token.key}").status_code for url in urls(image)} == {200}


@pytest.mark.parametrize("debug", [True, False])
def test_no_file_is_reachable_by_its_storage_path(client, settings, users, image, debug):
    paths = [image.original.name, *image.renditions.values_list("file", flat=True)]
    client.force_login(users["owner"])  # even for the owner: the path is not an access check
    with override_settings(DEBUG=debug):
        for path in paths:
            assert client.get(f"/media/{path}").status_code == 404, path


def test_behind_nginx_the_file_is_sent_by_an_internal_redirect_after_the_check(client, users, image, settings):
    settings.MEDIA_TASKS_X_ACCEL_REDIRECT_PREFIX = "/protected-media/"
    client.force_login(users["owner"])

    response = client.get(f"/api/images/{image.pk}/files/original")

    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-media/{image.original.name}"
    assert response.content == b""
    client.force_login(users["stranger"])
    assert "X-Accel-Redirect" not in client.get(f"/api/images/{image.pk}/files/original")


@pytest.mark.parametrize("name", ["nope", "..%2F..%2Fsettings", "original.jpg"])
def test_an_unknown_file_name_is_a_404(client, users, image, name):
    client.force_login(users["owner"])
    assert client.get(f"/api/images/{image.pk}/files/{name}").status_code == 404


def test_compose_nginx_serves_media_only_from_an_internal_location():
    from tests.helpers import REPO

    nginx = (REPO / "compose" / "nginx" / "nginx.conf").read_text()
    assert "location /media/" not in nginx
    block = nginx[nginx.index("location /protected-media/") :]
    assert "internal;" in block[: block.index("}")]
