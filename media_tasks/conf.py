"""What to make: the renditions defined in settings, and the options of one
request. Options are stored on the Image as JSON, so a retry or a re-run
replays exactly what was asked."""

from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from jobs.exceptions import BadInput

# Output format -> file extension. Only formats every browser shows.
OUTPUT_FORMATS = {"JPEG": "jpg", "WEBP": "webp"}
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
# Above 95 libjpeg's files grow fast for no visible gain.
QUALITY_RANGE = (1, 95)
WATERMARK_TEXT_MAX = 100


@dataclass(frozen=True)
class RenditionSpec:
    """One output size. Width only: that wide, height by aspect ratio. Width
    and height: fit inside the box, or fill it and crop the middle with
    `crop`. Never enlarged beyond the original."""

    name: str
    width: int
    height: int | None = None
    crop: bool = False
    format: str = "JPEG"
    quality: int = 85
    # Off for thumbnails: a mark at 150 px is noise, not a signature.
    watermark: bool = True

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"rendition name {self.name!r} must be a plain identifier (it is part of file names)")
        if self.width < 1 or (self.height is not None and self.height < 1):
            raise ValueError(f"rendition {self.name!r}: width and height must be positive")
        if self.crop and self.height is None:
            raise ValueError(f"rendition {self.name!r}: crop needs both width and height")
        _check_format(self.format)
        _check_quality(self.quality)


@dataclass(frozen=True)
class Watermark:
    text: str = ""
    # A name from settings.MEDIA_TASKS_WATERMARKS, never a path from a request.
    image: str = ""
    position: str = "bottom-right"
    opacity: float = 0.5

    def __post_init__(self):
        if bool(self.text) == bool(self.image):
            raise BadInput("a watermark is either text or a configured image, not both or neither")
        if len(self.text) > WATERMARK_TEXT_MAX:
            raise BadInput(f"watermark text is longer than {WATERMARK_TEXT_MAX} characters")
        if self.image and self.image not in settings.MEDIA_TASKS_WATERMARKS:
            raise BadInput(
                f"unknown watermark image {self.image!r}; "
                f"configured: {', '.join(settings.MEDIA_TASKS_WATERMARKS) or 'none'}"
            )
        if self.position not in POSITIONS:
            raise BadInput(f"watermark position must be one of {', '.join(POSITIONS)}")
        if not 0 < self.opacity <= 1:
            raise BadInput("watermark opacity must be above 0 and at most 1")


@dataclass(frozen=True)
class Options:
    """What a request may change: every rendition's format and quality, the
    metadata policy, and a watermark."""

    format: str | None = None
    quality: int | None = None
    # EXIF, XMP and comments go by default; GPS goes always (see imaging).
    strip_metadata: bool = True
    watermark: Watermark | None = field(default=None)

    def __post_init__(self):
        if self.format is not None:
            _check_format(self.format)
        if self.quality is not None:
            _check_quality(self.quality)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Options":
        data = dict(data or {})
        try:
            mark = data.pop("watermark", None)
            return cls(**data, watermark=Watermark(**mark) if mark else None)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"invalid image options: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def apply_to(self, spec: RenditionSpec) -> RenditionSpec:
        """The spec as this request wants it."""
        return RenditionSpec(
            **{**asdict(spec), "format": self.format or spec.format, "quality": self.quality or spec.quality}
        )


def _check_format(value: str) -> None:
    if value not in OUTPUT_FORMATS:
        raise BadInput(f"output format must be one of {', '.join(OUTPUT_FORMATS)}, not {value!r}")


def _check_quality(value: int) -> None:
    low, high = QUALITY_RANGE
    if not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"quality must be a whole number from {low} to {high}")


def rendition_specs() -> list[RenditionSpec]:
    """The renditions every image gets, from settings.MEDIA_TASKS_RENDITIONS."""
    try:
        return [RenditionSpec(name=name, **definition) for name, definition in settings.MEDIA_TASKS_RENDITIONS.items()]
    except (TypeError, ValueError, BadInput) as exc:
        raise ImproperlyConfigured(f"MEDIA_TASKS_RENDITIONS: {exc}") from None
