"""Pillow, and only Pillow: open an untrusted file safely, decode it once,
and make every rendition from that one decode. No Django, no database; the
functions here take bytes and settings values and return bytes.

Safety, in the order it happens:
1. Pillow may only try the allow-listed formats (`Image.open(formats=...)`),
   so the EPS, PSD, PDF... plugins never see the bytes and Ghostscript can
   never run, whatever the file is called.
2. Only the header is parsed before the size is checked against the pixel
   limit; a bomb is refused before a single pixel buffer is allocated.
3. Decoding errors of any kind are the input's fault: BadInput, no retry.
"""

import math
import warnings
from dataclasses import dataclass
from io import BytesIO

from PIL import Image, ImageCms, ImageDraw, ImageFile, ImageFont, ImageOps, UnidentifiedImageError
from PIL.ExifTags import Base as ExifTag

from jobs.exceptions import BadInput
from media_tasks.conf import OUTPUT_FORMATS, Options, RenditionSpec, Watermark

# Pillow's name for a JPEG carrying several pictures (many cameras): the
# first picture is an ordinary JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
# Pillow's own thumbnail() defaults. Bicubic is antialiased when shrinking
# (its support grows with the factor) and about 25% cheaper than Lanczos for
# a difference few can see at these sizes. With a reducing gap, a large
# shrink first goes through reduce() (a box filter by a whole factor) and the
# last, filtered step shrinks by at least 2: visually one fair pass.
RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 2.0
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

# For messages only: the decision is Pillow's, restricted to the allow-list.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%!PS", "PostScript (EPS)"),
    (b"\xc5\xd0\xd3\xc6", "PostScript (EPS)"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"%PDF", "PDF"),
)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int  # as displayed, after EXIF orientation
    height: int
    animated: bool


@dataclass(frozen=True)
class Rendered:
    name: str
    format: str
    width: int
    height: int
    data: bytes

    @property
    def extension(self) -> str:
        return OUTPUT_FORMATS[self.format]


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), None)


def _unidentified(data: bytes, allowed: list[str]) -> BadInput:
    kind = _sniff(data)
    accepted = ", ".join(allowed)
    if kind in allowed:
        return BadInput(f"the file looks like {kind} but is corrupt or truncated")
    if kind:
        return BadInput(
            f"{kind} files are not accepted (the format is read from the content, not the name); accepted: {accepted}"
        )
    return BadInput(f"not a recognised image; accepted formats: {accepted}")


def _too_large(width: int, height: int, max_pixels: int) -> BadInput:
    return BadInput(
        f"image too large: {width}x{height} is {width * height / 1e6:,.1f} megapixels; "
        f"the limit is {max_pixels / 1e6:g} megapixels"
    )


def open_image(data: bytes, *, allowed_formats: list[str], max_pixels: int) -> Image.Image:
    """Parse the header only. The format comes from the content and must be
    allowed; the declared size must be within `max_pixels`."""
    try:
        # Process-wide, but a prefork child runs one task at a time.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(BytesIO(data), formats=allowed_formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadInput(f"image too large: {exc}") from None
    except UnidentifiedImageError:
        raise _unidentified(data, allowed_formats) from None
    except Exception as exc:  # a parser choking on hostile bytes: the input's fault
        raise BadInput(f"cannot read the image header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _too_large(width, height, max_pixels)
    return image


# Formats Pillow decodes at a reduced scale (draft): their pixels are loaded
# by decode(), once the scale is known; every other format is loaded in full
# right after the header checks (_checked_load), before any metadata read.
_DRAFTABLE_FORMATS = ("JPEG", "MPO")


def _checked_load(image: Image.Image) -> None:
    """Decode every pixel, or BadInput. Pillow's LOAD_TRUNCATED_IMAGES would
    turn a truncated file into a picture with a grey or black tail: it is
    off here whatever another library set."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
    except Exception as exc:  # truncated, corrupt, or hostile in the middle
        raise BadInput(f"the image is corrupt or truncated: {exc}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _pixels_loaded(image: Image.Image) -> bool:
    return not getattr(image, "tile", None)


def _exif(image: Image.Image) -> Image.Exif:
    """The EXIF, without decoding pixels. Pillow's getexif() on a PNG (and
    other formats) loads the whole image when the EXIF is not in the header,
    and a decoding error there, swallowed as "unreadable EXIF", used to
    leave a half-decoded picture that then rendered with black bands."""
    if image.format in _DRAFTABLE_FORMATS or image.format == "TIFF" or _pixels_loaded(image):
        return image.getexif()
    exif = Image.Exif()
    if raw := image.info.get("exif"):
        exif.load(raw)
    return exif


def _orientation(image: Image.Image) -> int:
    try:
        return int(_exif(image).get(ExifTag.Orientation, 1))
    except Exception:  # unreadable EXIF: show the pixels as stored
        return 1


def describe(image: Image.Image) -> ImageInfo:
    width, height = image.size
    if _orientation(image) in (5, 6, 7, 8):  # a quarter turn
        width, height = height, width
    return ImageInfo(
        format=_FORMAT_ALIASES.get(image.format, image.format),
        width=width,
        height=height,
        # Never n_frames: for GIF that walks every frame of a hostile file.
        animated=bool(getattr(image, "is_animated", False)),
    )


def plan(spec: RenditionSpec, width: int, height: int) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """Output size, and the box of the (upright) source it is taken from."""
    box = (0.0, 0.0, float(width), float(height))
    if spec.crop:
        target = spec.width / spec.height
        if width / height > target:  # too wide: keep the middle columns
            keep = height * target
            box = ((width - keep) / 2, 0.0, (width + keep) / 2, float(height))
        else:
            keep = width / target
            box = (0.0, (height - keep) / 2, float(width), (height + keep) / 2)
        scale = spec.width / (box[2] - box[0])
    else:
        scale = spec.width / width
        if spec.height:
            scale = min(scale, spec.height / height)
    scale = min(scale, 1.0)  # never enlarge
    box_width, box_height = box[2] - box[0], box[3] - box[1]
    return (max(1, round(box_width * scale)), max(1, round(box_height * scale))), box


def decode(image: Image.Image, *, scale: float) -> Image.Image:
    """Decode the first frame once. A JPEG is decoded by libjpeg at the
    smallest DCT scale (1/2, 1/4, 1/8) still holding `scale` of the original:
    a 12 MP photo for a 1600 px rendition decodes a quarter of the pixels.

    Animations: the first frame is the still picture (later frames are never
    read, so neither is a frame-count bomb)."""
    if scale < 1:
        width, height = image.size
        image.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
    _checked_load(image)
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # unreadable EXIF: show the pixels as stored
        pass
    return image


def _eight_bit(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        return image.convert("RGBA")
    if image.mode.startswith("I;16"):
        return image.point(lambda value: value / 256, "L")
    if image.mode in ("I", "F") and image.getextrema()[1] > 255:
        return image.point(lambda value: value / 256).convert("L")
    return image


def to_srgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, or RGBA when the image has real transparency, in sRGB.

    An embedded ICC profile is converted to sRGB with LittleCMS and then
    dropped: untagged sRGB is what every browser and viewer shows right, and
    the profile would not bloat each thumbnail. A profile LittleCMS cannot
    use (broken, or for another colour space) is ignored.
    """
    icc = image.info.get("icc_profile")
    image = _eight_bit(image)
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(BytesIO(icc))
            if "srgb" not in ImageCms.getProfileDescription(profile).lower():
                mode = "RGBA" if image.mode == "RGBA" else "RGB"
                image = ImageCms.profileToProfile(image, profile, _SRGB, outputMode=mode)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    if image.mode == "RGBA" and image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB")  # an alpha channel with nothing transparent in it
    elif image.mode not in ("RGB", "RGBA"):
        try:
            image = image.convert("RGB")
        except ValueError as exc:
            raise BadInput(f"unsupported colour mode {image.mode}: {exc}") from None
    image.info = {}  # nothing from the source is written unless asked for
    return image


def kept_exif(exif: Image.Exif) -> bytes:
    """The source's EXIF for a request that keeps metadata: orientation reset
    (the pixels are upright now) and GPS removed, always: a location is
    personal data no rendition needs."""
    if not exif:
        return b""
    kept = Image.Exif()
    kept.load(exif.tobytes())  # a copy: the decode still needs the original orientation
    kept[ExifTag.Orientation] = 1
    kept.pop(ExifTag.GPSInfo, None)
    return kept.tobytes()


def _position(position: str, outer: tuple[int, int], inner: tuple[int, int], margin: int) -> tuple[int, int]:
    (outer_w, outer_h), (inner_w, inner_h) = outer, inner
    x = {"left": margin, "right": outer_w - inner_w - margin}
    y = {"top": margin, "bottom": outer_h - inner_h - margin}
    if position == "center":
        return (outer_w - inner_w) // 2, (outer_h - inner_h) // 2
    vertical, horizontal = position.split("-")
    return x[horizontal], y[vertical]


def watermark_apply(image: Image.Image, *, mark: Watermark, mark_image: Image.Image | None = None) -> Image.Image:
    """Text or a logo at a corner or the centre, at `mark.opacity`, sized
    relative to the rendition so it reads the same on every size."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    margin = max(2, round(min(base.size) * 0.03))
    alpha = round(255 * mark.opacity)
    if mark.text:
        font = ImageFont.load_default(size=max(10, min(base.size) // 12))
        draw = ImageDraw.Draw(overlay)
        left, top, right, bottom = draw.textbbox((0, 0), mark.text, font=font, stroke_width=1)
        x, y = _position(mark.position, base.size, (right - left, bottom - top), margin)
        draw.text(
            (x - left, y - top),
            mark.text,
            font=font,
            fill=(255, 255, 255, alpha),
            stroke_width=1,
            stroke_fill=(0, 0, 0, alpha),
        )
    else:
        logo = mark_image.convert("RGBA")
        logo.thumbnail((max(1, base.width // 4), max(1, base.height // 4)), Image.Resampling.LANCZOS)
        logo.putalpha(logo.getchannel("A").point(lambda value: value * mark.opacity))
        overlay.paste(logo, _position(mark.position, base.size, logo.size, margin))
    marked = Image.alpha_composite(base, overlay)
    return marked if image.mode == "RGBA" else marked.convert("RGB")


def flatten(image: Image.Image, background: str) -> Image.Image:
    """JPEG has no transparency: composite onto the background colour."""
    if image.mode != "RGBA":
        return image
    flat = Image.new("RGB", image.size, background)
    flat.paste(image, mask=image.getchannel("A"))
    return flat


def encode(image: Image.Image, *, format: str, quality: int, exif: bytes = b"") -> bytes:
    out = BytesIO()
    if format == "JPEG":
        # optimize: Huffman tables for this image, a few percent smaller for
        # a few milliseconds, paid once and saved on every download.
        image.save(out, "JPEG", quality=quality, optimize=True, exif=exif)
    else:
        image.save(out, "WEBP", quality=quality, exif=exif)
    return out.getvalue()


def renditions_render(
    data: bytes,
    *,
    specs: list[RenditionSpec],
    options: Options,
    allowed_formats: list[str],
    max_pixels: int,
    background: str = "#ffffff",
    mark_image: Image.Image | None = None,
) -> tuple[ImageInfo, list[Rendered]]:
    """Every rendition of one image, from a single decode. Raises BadInput
    for anything wrong with the image itself."""
    with open_image(data, allowed_formats=allowed_formats, max_pixels=max_pixels) as image:
        if image.format not in _DRAFTABLE_FORMATS:
            _checked_load(image)  # before any metadata read can load it half-way
        info = describe(image)
        exif = b"" if options.strip_metadata else kept_exif(image.getexif())
        plans = [(options.apply_to(spec), *plan(spec, info.width, info.height)) for spec in specs]
        work = to_srgb(decode(image, scale=max(_scale(size, box) for _, size, box in plans)))
        # Full-frame pictures to resize from, each with its scale against the
        # upright original (a JPEG draft may have decoded it smaller).
        sources = [_Source(work, work.width / info.width, work.height / info.height)]
        made = {}
        # Largest first, each from the smallest full-frame picture already
        # made that is large enough: the 800 px comes from the 1600 px, not
        # from the decode, at a fraction of the cost.
        for spec, size, box in sorted(plans, key=lambda p: -_scale(p[1], p[2])):
            source = min((s for s in sources if s.fx >= _scale(size, box)), key=lambda s: s.fx)
            out = source.image.resize(size, RESAMPLE, box=source.map(box), reducing_gap=REDUCING_GAP)
            if box == (0, 0, info.width, info.height):
                sources.append(_Source(out, out.width / info.width, out.height / info.height))
            if options.watermark and spec.watermark:
                out = watermark_apply(out, mark=options.watermark, mark_image=mark_image)
            if spec.format == "JPEG":
                out = flatten(out, background)
            body = encode(out, format=spec.format, quality=spec.quality, exif=exif)
            made[spec.name] = Rendered(spec.name, spec.format, out.width, out.height, body)
    return info, [made[spec.name] for spec, _, _ in plans]


@dataclass(frozen=True)
class _Source:
    image: Image.Image
    fx: float
    fy: float

    def map(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = box
        return (x0 * self.fx, y0 * self.fy, x1 * self.fx, y1 * self.fy)


def _scale(size: tuple[int, int], box: tuple[float, float, float, float]) -> float:
    """How much of the original's resolution an output needs."""
    return size[0] / (box[2] - box[0])
