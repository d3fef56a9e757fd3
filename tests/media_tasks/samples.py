"""Images the test data does not have, made on the spot: a tiny PNG that
declares a huge size, an animation, transparency, GPS, an ICC profile."""

import struct
import zlib
from io import BytesIO

from PIL import Image
from PIL.ExifTags import IFD, Base


def encoded(image: Image.Image, format: str = "JPEG", **params) -> bytes:
    out = BytesIO()
    image.save(out, format, **params)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(BytesIO(data))
    image.load()
    return image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header for width x height RGB, with a few bytes of pixel
    data: under 100 bytes that would need gigabytes once decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def two_frame_gif() -> bytes:
    """A red first frame, then a blue one."""
    red, blue = Image.new("RGB", (60, 40), (255, 0, 0)), Image.new("RGB", (60, 40), (0, 0, 255))
    return encoded(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)


def half_transparent_png() -> bytes:
    """Left half opaque green, right half fully transparent (its colour
    channels black, as most editors leave them)."""
    image = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    image.paste((0, 160, 0, 255), (0, 0, 50, 50))
    return encoded(image, "PNG")


def jpeg_with_personal_metadata() -> bytes:
    """A JPEG with a camera model, GPS coordinates, XMP and a comment."""
    exif = Image.Exif()
    exif[Base.Model] = "Test Camera"
    exif[Base.Orientation] = 1
    exif[IFD.GPSInfo] = {1: "N", 2: (52.0, 22.0, 15.0), 3: "E", 4: (4.0, 53.0, 30.0)}
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    return encoded(Image.new("RGB", (64, 48), (200, 100, 50)), "JPEG", exif=exif, xmp=xmp, comment=b"shot at home")


def rotated_jpeg(orientation: int) -> bytes:
    """A 200x100 picture, red on its left half, stored with an EXIF
    orientation tag (the pixels as a camera held sideways writes them)."""
    upright = Image.new("RGB", (200, 100), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 100, 100))
    # What a camera stores is the upright picture turned back.
    stored = upright.transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[Base.Orientation] = orientation
    return encoded(stored, "JPEG", exif=exif, quality=95)


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15f16(x) + _s15f16(y) + _s15f16(z)


def _text_description(text: bytes) -> bytes:
    # ICC v2 textDescriptionType: ASCII, then empty Unicode and ScriptCode parts.
    return b"desc\0\0\0\0" + struct.pack(">I", len(text) + 1) + text + b"\0" + b"\0" * 8 + b"\0" * 3 + b"\0" * 67


def linear_rgb_profile() -> bytes:
    """An ICC v2 profile with sRGB's primaries but a linear tone curve
    (gamma 1.0): the value 128 means half the light, which sRGB writes as
    about 188. Converting to sRGB visibly brightens mid-tones."""
    linear = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100) + b"\0\0"
    tags = [
        (b"desc", _text_description(b"Linear RGB (test)")),
        (b"cprt", b"text\0\0\0\0no copyright\0"),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", _xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", _xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", linear),
        (b"gTRC", linear),
        (b"bTRC", linear),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset, len(data))
        body += data
        offset += len(data)
    header = (
        struct.pack(">I", offset)
        + b"\0" * 4
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + _s15f16(0.9642)
        + _s15f16(1.0)
        + _s15f16(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    return header + table + body
