"""Hostile images over the HTTP path a person uses: what the header tells
(format, dimensions, a header that does not parse) is a 400 naming the
file at upload, with nothing stored; a file whose pixels fail to decode
anywhere (a PNG with a corrupt data stream, a truncated file) fails its
job with a clear message and never renders from a partial decode."""

import struct
import zlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.exceptions import BadInput
from media_tasks import services
from media_tasks.models import Image, Rendition
from tests.media_tasks.conftest import stored_files

pytestmark = pytest.mark.django_db


def _png_with_idat(data: bytes, idat: bytes) -> bytes:
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return data[:start] + chunk + data[start + 12 + length :]


def corrupt_png_stream(png: bytes) -> bytes:
    """hopper.png with 200 zero bytes in the middle of its compressed data
    (valid chunk CRC: only the decoder can tell)."""
    start = png.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", png[start - 8 : start - 4])
    idat = bytearray(png[start : start + length])
    idat[length // 2 : length // 2 + 200] = bytes(200)
    return _png_with_idat(png, bytes(idat))


def truncated_png_stream(png: bytes) -> bytes:
    start = png.index(b"IDAT") + 4
    (length,) = struct.unpack(">I", png[start - 8 : start - 4])
    return _png_with_idat(png, png[start : start + length // 2])


def upload(client, data: bytes, name: str):
    return client.post("/api/images/", {"file": SimpleUploadedFile(name, data)})


@pytest.mark.parametrize(
    ("name", "make", "says"),
    [
        ("hopper.psd", lambda t: (t / "hopper.psd").read_bytes(), "Photoshop (PSD) files are not accepted"),
        ("sample.eps", lambda t: (t / "pil_sample_cmyk.eps").read_bytes(), "PostScript (EPS) files are not accepted"),
        ("bomb.gif", lambda t: (t / "decompression_bomb.gif").read_bytes(), "image too large"),
        ("broken.png", lambda t: (t / "broken.png").read_bytes(), "corrupt or truncated"),
        ("header-only.png", lambda t: (t / "hopper.png").read_bytes()[:20], "cannot read the image header"),
        ("cut.webp", lambda t: (t / "hopper.webp").read_bytes()[:2000], "cannot read the image header"),
        ("notes.jpg", lambda t: b"just some text, named like a photo", "not a recognised image"),
    ],
)
def test_what_the_header_tells_is_a_400_naming_the_file_and_nothing_is_stored(
    admin_client, testdata, media_root, name, make, says
):
    response = upload(admin_client, make(testdata), name)

    assert response.status_code == 400, response.content
    assert name in response.json()["file"] and says in response.json()["file"], response.json()
    assert not Image.objects.exists()
    assert stored_files(media_root) == set()


def test_a_batch_with_one_bad_header_is_a_400_naming_it_and_stores_nothing(admin_client, testdata, media_root):
    files = [
        SimpleUploadedFile("good.jpg", (testdata / "hopper.jpg").read_bytes()),
        SimpleUploadedFile("bad.psd", (testdata / "hopper.psd").read_bytes()),
    ]

    response = admin_client.post("/api/images/batches/", {"files": files})

    assert response.status_code == 400
    assert "bad.psd" in response.json()["files"]
    assert not Image.objects.exists()
    assert stored_files(media_root) == set()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("corrupt-stream.png", lambda t: corrupt_png_stream((t / "hopper.png").read_bytes())),
        ("truncated-stream.png", lambda t: truncated_png_stream((t / "hopper.png").read_bytes())),
        ("truncated.jpg", lambda t: (t / "hopper.jpg").read_bytes()[:3000]),
        ("truncated.gif", lambda t: (t / "hopper.gif").read_bytes()[:8000]),
    ],
)
def test_a_file_whose_pixels_fail_to_decode_fails_its_job_and_renders_nothing(admin_client, testdata, name, make):
    response = upload(admin_client, make(testdata), name)
    assert response.status_code == 202, response.content  # the header is fine
    image = Image.objects.get(pk=response.json()["id"])

    with pytest.raises(BadInput, match="corrupt or truncated"):
        services.renditions_create(image=image)

    assert not Rendition.objects.exists()


def test_the_admin_upload_refuses_a_bad_header_with_a_message_and_stores_nothing(admin_client, testdata, media_root):
    response = admin_client.post(
        "/admin/media_tasks/image/add/",
        {
            "files": [SimpleUploadedFile("scan.psd", (testdata / "hopper.psd").read_bytes())],
            "watermark_position": "bottom-right",
            "watermark_opacity": "0.5",
        },
        follow=True,
    )

    assert response.status_code == 200
    assert "scan.psd: photoshop (psd) files are not accepted" in response.content.decode().lower()
    assert not Image.objects.exists()
    assert stored_files(media_root) == set()
