"""renditions_create on real images: the default renditions, and what comes
out of them pixel by pixel (orientation, colour, transparency, metadata)."""

from io import BytesIO

import pytest
from PIL import Image, ImageChops, ImageCms, ImageFile, ImageStat
from PIL.ExifTags import IFD, Base

from media_tasks import services
from media_tasks.models import Rendition
from tests.media_tasks import samples
from tests.media_tasks.conftest import opened

pytestmark = pytest.mark.django_db

# One rendition, as large as the test images, nearly lossless: what comes
# out can be compared with what went in.
FULL_SIZE = {"full": {"width": 2000, "format": "JPEG", "quality": 95}}


@pytest.fixture
def full_size(settings):
    settings.MEDIA_TASKS_RENDITIONS = FULL_SIZE


def made(image) -> dict[str, Rendition]:
    services.renditions_create(image=image)
    return {rendition.name: rendition for rendition in Rendition.objects.filter(image=image)}


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255."""
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def test_the_default_renditions_have_the_configured_sizes_and_are_never_enlarged(upload):
    photo = Image.linear_gradient("L").resize((2400, 1800)).convert("RGB")
    renditions = made(upload(samples.encoded(photo)))
    assert {name: (r.width, r.height, r.format) for name, r in renditions.items()} == {
        "thumb": (150, 150, "JPEG"),
        "medium": (800, 600, "JPEG"),
        "large": (1600, 1200, "JPEG"),
    }
    for rendition in renditions.values():
        stored = opened(rendition)
        assert (stored.format, stored.size) == ("JPEG", (rendition.width, rendition.height))
        assert rendition.bytes == rendition.file.size

    small = made(upload(samples.encoded(photo.resize((300, 100)))))
    assert {name: (r.width, r.height) for name, r in small.items()} == {
        "thumb": (100, 100),  # cropped square, not enlarged
        "medium": (300, 100),
        "large": (300, 100),
    }


def test_the_thumbnail_is_the_middle_of_the_picture(upload):
    # Red | green | blue thirds: a centred square crop is all green.
    stripes = Image.new("RGB", (900, 300), (255, 0, 0))
    stripes.paste((0, 255, 0), (300, 0, 600, 300))
    stripes.paste((0, 0, 255), (600, 0, 900, 300))
    thumb = opened(made(upload(samples.encoded(stripes, quality=95)))["thumb"])
    assert thumb.size == (150, 150)
    red, green, blue = ImageStat.Stat(thumb).mean
    assert green > 240 and red < 15 and blue < 15


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_hopper_with_an_exif_orientation_comes_out_upright(testdata, upload, full_size, orientation):
    upright = Image.open(testdata / "hopper.jpg")
    stored = Image.open(testdata / f"hopper_orientation_{orientation}.jpg")
    out = opened(made(upload((testdata / f"hopper_orientation_{orientation}.jpg").read_bytes()))["full"])

    assert out.size == (128, 128)
    assert difference(out, upright) < 10  # JPEG noise
    assert difference(stored, upright) > 50  # the file itself is turned
    assert out.getexif().get(Base.Orientation) is None


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_sideways_photo_swaps_width_and_height(upload, full_size, orientation):
    image = upload(samples.rotated_jpeg(orientation))
    out = opened(made(image)["full"])
    image.refresh_from_db()

    assert (image.width, image.height) == (200, 100)
    assert out.size == (200, 100)
    assert out.getpixel((50, 50))[0] > 200  # red on the left, as seen upright
    assert out.getpixel((150, 50))[2] > 200


def test_cmyk_becomes_rgb_with_the_same_colours(testdata, upload, full_size):
    source = Image.open(testdata / "pil_sample_cmyk.jpg")
    assert source.mode == "CMYK"
    out = opened(made(upload((testdata / "pil_sample_cmyk.jpg").read_bytes()))["full"])
    assert out.mode == "RGB"
    assert difference(out, source.convert("RGB")) < 10


@pytest.mark.parametrize("name", ["hopper_gray.jpg", "hopper.gif", "hopper.png", "hopper.webp"])
def test_grey_palette_png_and_webp_sources_become_rgb_jpeg(testdata, upload, full_size, name):
    source = Image.open(testdata / name)
    out = opened(made(upload((testdata / name).read_bytes()))["full"])
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", source.size)
    assert difference(out, source) < 10


def test_transparency_is_flattened_on_white_for_jpeg(upload, full_size):
    out = opened(made(upload(samples.half_transparent_png(), name="logo.png"))["full"])
    assert out.mode == "RGB"
    assert all(channel > 245 for channel in out.getpixel((90, 25)))  # white, not black
    red, green, blue = out.getpixel((10, 25))
    assert green > 140 and red < 20 and blue < 20


def test_the_background_colour_is_a_setting(settings, upload, full_size):
    settings.MEDIA_TASKS_BACKGROUND = "#ff00ff"
    red, green, blue = opened(made(upload(samples.half_transparent_png()))["full"]).getpixel((90, 25))
    assert red > 240 and green < 15 and blue > 240


def test_transparency_is_kept_in_webp(upload, full_size):
    out = opened(made(upload(samples.half_transparent_png(), format="WEBP"))["full"])
    assert (out.format, out.mode) == ("WEBP", "RGBA")
    assert out.getpixel((90, 25))[3] == 0
    assert out.getpixel((10, 25))[3] == 255


def test_an_animated_gif_gives_its_first_frame(upload, full_size):
    out = opened(made(upload(samples.two_frame_gif(), name="anim.gif"))["full"])
    red, green, blue = out.getpixel((30, 20))
    assert red > 240 and blue < 15


def test_exif_gps_xmp_and_comments_are_stripped_by_default(upload, full_size):
    source = samples.decoded(samples.jpeg_with_personal_metadata())
    assert source.getexif().get_ifd(IFD.GPSInfo) and "xmp" in source.info and "comment" in source.info

    out = opened(made(upload(samples.jpeg_with_personal_metadata()))["full"])
    assert not out.getexif()
    assert not {"exif", "xmp", "comment", "icc_profile"} & set(out.info)


def test_keeping_metadata_keeps_exif_but_never_gps(upload, full_size):
    out = opened(made(upload(samples.jpeg_with_personal_metadata(), strip_metadata=False))["full"])
    exif = out.getexif()
    assert exif[Base.Model] == "Test Camera"
    assert exif.get(Base.Orientation) == 1
    assert not exif.get_ifd(IFD.GPSInfo)


def test_an_embedded_icc_profile_is_converted_to_srgb_and_dropped(upload, full_size):
    grey = Image.new("RGB", (40, 40), (128, 128, 128))
    out = opened(made(upload(samples.encoded(grey, "PNG", icc_profile=samples.linear_rgb_profile())))["full"])
    assert "icc_profile" not in out.info
    # Half the light: 128 in linear RGB is about 188 in sRGB.
    assert all(abs(channel - 188) <= 3 for channel in out.getpixel((20, 20)))


def test_an_srgb_profile_leaves_the_pixels_alone(testdata, upload, full_size):
    source = Image.open(testdata / "flower2.jpg")
    profile = ImageCms.ImageCmsProfile(BytesIO(source.info["icc_profile"]))
    assert ImageCms.getProfileDescription(profile).startswith("sRGB")
    out = opened(made(upload((testdata / "flower2.jpg").read_bytes()))["full"])
    assert "icc_profile" not in out.info
    assert difference(out, source) < 5


def test_a_request_can_convert_every_rendition_to_webp_at_a_quality(upload):
    photo = Image.effect_noise((1000, 800), 30).convert("RGB")
    image = upload(samples.encoded(photo), format="WEBP", quality=40)
    renditions = made(image)
    assert {r.format for r in renditions.values()} == {"WEBP"}
    assert all(r.file.name.endswith(".webp") and opened(r).format == "WEBP" for r in renditions.values())


def test_a_text_watermark_marks_its_corner_and_nothing_else(upload, full_size):
    plain = Image.new("RGB", (400, 300), (40, 90, 160))
    data = samples.encoded(plain, quality=95)
    out = opened(made(upload(data, watermark={"text": "(c) Kit", "position": "bottom-right", "opacity": 1.0}))["full"])
    clean = opened(made(upload(data))["full"])

    assert difference(out.crop((250, 230, 400, 300)), clean.crop((250, 230, 400, 300))) > 5
    assert difference(out.crop((0, 0, 200, 150)), clean.crop((0, 0, 200, 150))) < 1


def test_an_image_watermark_is_placed_at_its_position_with_its_opacity(settings, testdata, upload, full_size):
    settings.MEDIA_TASKS_WATERMARKS = {"hopper": str(testdata / "hopper.png")}
    black = samples.encoded(Image.new("RGB", (400, 400), (0, 0, 0)), quality=95)
    out = opened(made(upload(black, watermark={"image": "hopper", "position": "top-left", "opacity": 0.5}))["full"])

    # A quarter of the width, inside the 3% margin, at half strength.
    logo = Image.open(testdata / "hopper.png").convert("RGB").resize((100, 100))
    half = Image.blend(Image.new("RGB", (100, 100)), logo, 0.5)
    assert difference(out.crop((12, 12, 112, 112)), half) < 8
    assert difference(out.crop((200, 200, 400, 400)), Image.new("RGB", (200, 200))) < 1


def test_thumbnails_are_not_watermarked(upload):
    plain = samples.encoded(Image.new("RGB", (600, 600), (40, 90, 160)), quality=95)
    marked = made(upload(plain, watermark={"text": "(c) Kit", "opacity": 1.0}))
    clean = made(upload(plain))
    assert difference(opened(marked["thumb"]), opened(clean["thumb"])) < 1
    assert difference(opened(marked["medium"]), opened(clean["medium"])) > 0.5


def test_a_large_jpeg_is_decoded_once_at_a_reduced_scale(upload, monkeypatch):
    loads = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        if self.tile:  # pixels still to decode; later calls are no-ops
            loads.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    photo = Image.effect_noise((4000, 3000), 40).convert("RGB")
    made(upload(samples.encoded(photo)))
    # large needs 1600 of 4000 columns: libjpeg decodes at 1/2.
    assert loads == [(2000, 1500)]
