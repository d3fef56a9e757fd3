"""Hostile input is refused with a readable BadInput, from its content and
header, before anything large is allocated or any outside program runs."""

import pytest
from PIL import EpsImagePlugin, ImageFile

from jobs.exceptions import BadInput
from media_tasks import services
from media_tasks.models import Rendition
from tests.media_tasks import samples

pytestmark = pytest.mark.django_db


def refused(data: bytes, **limits) -> str:
    with pytest.raises(BadInput) as caught:
        services.image_validate(data=data, **limits)
    return str(caught.value)


@pytest.fixture
def decoding_forbidden(monkeypatch):
    """Any pixel decode fails the test: refusals must come from the header."""

    def load(self):
        raise AssertionError(f"{self.format} {self.size} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.fixture
def ghostscript_forbidden(monkeypatch):
    def run(*args, **kwargs):
        raise AssertionError("Ghostscript was run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", run)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", run)


def test_the_decompression_bomb_gif_is_refused_as_too_large(testdata, decoding_forbidden):
    message = refused((testdata / "decompression_bomb.gif").read_bytes())
    assert message.startswith("image too large")


def test_a_tiny_png_declaring_20000_by_20000_is_refused_before_decoding(decoding_forbidden):
    data = samples.png_declaring(20000, 20000)
    assert len(data) < 100
    assert refused(data).startswith("image too large")


def test_the_pixel_limit_is_a_setting_checked_against_the_header(settings, testdata, decoding_forbidden):
    settings.MEDIA_TASKS_MAX_PIXELS = 10_000
    message = refused((testdata / "hopper.jpg").read_bytes())
    assert message == "image too large: 128x128 is 0.0 megapixels; the limit is 0.01 megapixels"


def test_pillows_bomb_warning_refuses_an_image_even_above_a_raised_limit(settings, decoding_forbidden):
    # Pillow warns between MAX_IMAGE_PIXELS (89 MP here) and twice it; a
    # warning must not let the image through.
    settings.MEDIA_TASKS_MAX_PIXELS = 10**10
    assert refused(samples.png_declaring(12000, 10000)).startswith("image too large")


@pytest.mark.parametrize("name", ["hopper.psd", "pil_sample_cmyk.eps"])
def test_formats_outside_the_allow_list_are_refused_by_content_whatever_their_name(
    testdata, upload, name, ghostscript_forbidden
):
    data = (testdata / name).read_bytes()
    kind = {"hopper.psd": "Photoshop (PSD)", "pil_sample_cmyk.eps": "PostScript (EPS)"}[name]

    assert refused(data).startswith(f"{kind} files are not accepted")
    image = upload(data, name="holiday.jpg")
    with pytest.raises(BadInput, match="not accepted"):
        services.renditions_create(image=image)
    assert not Rendition.objects.exists()


def test_the_allow_list_is_a_setting(settings, testdata):
    settings.MEDIA_TASKS_ALLOWED_FORMATS = ["PNG"]
    assert (
        refused((testdata / "hopper.gif").read_bytes())
        == "GIF files are not accepted (the format is read from the content, not the name); accepted: PNG"
    )
    assert services.image_validate(data=(testdata / "hopper.png").read_bytes()).format == "PNG"


def test_a_corrupt_png_gets_a_readable_error(testdata):
    assert refused((testdata / "broken.png").read_bytes()) == "the file looks like PNG but is corrupt or truncated"


def test_a_truncated_jpeg_fails_when_decoded_with_a_readable_error(testdata, upload):
    data = (testdata / "flower.jpg").read_bytes()
    image = upload(data[: len(data) // 2])

    with pytest.raises(BadInput, match="^the image is corrupt or truncated: image file is truncated"):
        services.renditions_create(image=image)


def test_bytes_that_are_no_image_at_all_are_refused(testdata):
    assert refused(b"hello, world").startswith("not a recognised image; accepted formats: JPEG, PNG, WEBP, GIF, TIFF")


def test_a_valid_image_is_described_from_its_header_alone(testdata, decoding_forbidden):
    info = services.image_validate(data=(testdata / "hopper_orientation_6.jpg").read_bytes())
    assert (info.format, info.width, info.height, info.animated) == ("JPEG", 128, 128, False)
    info = services.image_validate(data=samples.two_frame_gif())
    assert (info.format, info.width, info.height, info.animated) == ("GIF", 60, 40, True)
