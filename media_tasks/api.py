"""The image API: upload one image or a batch (202 Accepted; the work runs
on the images queue) and follow them.

Uploading needs media_tasks.add_image. A user reads their own images and
batches, and anyone's with media_tasks.view_image; others get 404. The web
process never parses an uploaded image: it checks sizes, stores the bytes
under a generated name and enqueues; the worker reads the content.
"""

from urllib.parse import quote

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import job_representation
from jobs.exceptions import BadInput
from jobs.models import JobStatus
from jobs.schema import VALIDATION_ERROR, ErrorResponse
from media_tasks import services
from media_tasks.conf import OUTPUT_FORMATS, POSITIONS, QUALITY_RANGE, WATERMARK_TEXT_MAX, Options, Watermark
from media_tasks.models import Image, ImageBatch, Rendition
from media_tasks.schema import BatchResponse, ImageListResponse, ImageResponse

# Room for the multipart framing and the option fields around the files.
MULTIPART_ALLOWANCE = 64 * 1024
LIST_LIMIT = 100


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


class _FileSizeLimit(FileUploadHandler):
    """Drops a file part as soon as it passes the limit, so an oversized file
    is never stored whole, even when no Content-Length announced it. The
    other fields are still read: a CSRF token may come after the file."""

    def __init__(self, request, limit: int):
        super().__init__(request)
        self.limit = limit
        self.too_large: str | None = None

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            self.too_large = self.file_name
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file


class _Flag(serializers.BooleanField):
    # In form data an absent checkbox means "not sent", so the default holds
    # (DRF would read it as False).
    default_empty_html = serializers.empty


class OptionsRequest(serializers.Serializer):
    format = serializers.ChoiceField(choices=list(OUTPUT_FORMATS), required=False)
    quality = serializers.IntegerField(min_value=QUALITY_RANGE[0], max_value=QUALITY_RANGE[1], required=False)
    strip_metadata = _Flag(default=True)
    watermark_text = serializers.CharField(max_length=WATERMARK_TEXT_MAX, required=False, allow_blank=True)
    watermark_image = serializers.CharField(max_length=100, required=False, allow_blank=True)
    watermark_position = serializers.ChoiceField(choices=POSITIONS, default="bottom-right")
    watermark_opacity = serializers.FloatField(min_value=0.01, max_value=1, default=0.5)

    def validate(self, data) -> dict:
        try:
            watermark = None
            if data.get("watermark_text") or data.get("watermark_image"):
                watermark = Watermark(
                    text=data.get("watermark_text", ""),
                    image=data.get("watermark_image", ""),
                    position=data["watermark_position"],
                    opacity=data["watermark_opacity"],
                )
            data["options"] = Options(
                format=data.get("format"),
                quality=data.get("quality"),
                strip_metadata=data["strip_metadata"],
                watermark=watermark,
            )
        except BadInput as exc:
            raise ValidationError({"options": str(exc)}) from None
        return data


@extend_schema_field(OpenApiTypes.BINARY)
class _UploadedFile(serializers.FileField):
    """A file part of the form, as bytes (a FileField reads as a URL in the
    schema, as it would in an answer)."""


class ImageUploadRequest(OptionsRequest):
    """The upload's form as the schema shows it; the view reads the file
    itself (sizes checked while it streams) and validates OptionsRequest."""

    file = _UploadedFile(help_text="The image (one file).")


class BatchUploadRequest(OptionsRequest):
    files = serializers.ListField(child=_UploadedFile(), help_text="The images (the field repeated).")


def rendition_representation(rendition: Rendition, request: Request) -> dict:
    return {
        "name": rendition.name,
        # The authorised view, never the storage's own URL: files are not
        # public (ImageFileDownload).
        "url": request.build_absolute_uri(reverse("media_tasks:image-file", args=[rendition.image_id, rendition.name])),
        "format": rendition.format,
        "width": rendition.width,
        "height": rendition.height,
        "bytes": rendition.bytes,
    }


def image_representation(image: Image, request: Request) -> dict:
    job = image.job
    return {
        "id": str(image.id),
        "url": request.build_absolute_uri(reverse("media_tasks:image-detail", args=[image.id])),
        "original_name": image.original_name,
        "original_bytes": image.original_bytes,
        "batch": (
            request.build_absolute_uri(reverse("media_tasks:batch-detail", args=[image.batch_id]))
            if image.batch_id
            else None
        ),
        # Before its job exists the image is waiting like one.
        "status": job.status if job else JobStatus.PENDING.value,
        "progress": {"percent": job.progress, "message": job.progress_message}
        if job
        else {"percent": 0, "message": ""},
        "error": (job.error or None) if job else None,
        "job": job_representation(job, request, with_result=False) if job else None,
        "format": image.format or None,
        "width": image.width,
        "height": image.height,
        "renditions": [rendition_representation(r, request) for r in image.renditions.all()],
        "created_at": image.created_at,
    }


def batch_representation(batch: ImageBatch, request: Request) -> dict:
    images = batch.images.select_related("job").order_by("created_at")
    return {
        "id": str(batch.id),
        "url": request.build_absolute_uri(reverse("media_tasks:batch-detail", args=[batch.id])),
        **services.batch_summary(batch=batch),
        "images": [
            {
                "id": str(image.id),
                "url": request.build_absolute_uri(reverse("media_tasks:image-detail", args=[image.id])),
                "original_name": image.original_name,
                "status": image.job.status if image.job else JobStatus.PENDING.value,
                "error": (image.job.error or None) if image.job else None,
            }
            for image in images
        ],
        "created_at": batch.created_at,
    }


def _visible(request: Request, queryset: QuerySet) -> QuerySet:
    if request.user.has_perm("media_tasks.view_image"):
        return queryset
    return queryset.filter(requested_by=request.user)


class _UploadView(APIView):
    parser_classes = [MultiPartParser]
    max_files = 1

    def initialize_request(self, request, *args, **kwargs) -> Request:
        # On Django's request, before DRF wraps it: the size limit must be in
        # place before anything reads the body (a session login's CSRF check
        # does, during authentication).
        if request.method == "POST":
            self.size_limit = _FileSizeLimit(request, settings.MEDIA_TASKS_MAX_UPLOAD_BYTES)
            request.upload_handlers = [self.size_limit, *request.upload_handlers]
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request: Request, *args, **kwargs) -> None:
        # Before authentication, for the same reason: refuse a body that is
        # too large by its declared length before reading any of it.
        if request.method == "POST":
            limit = settings.MEDIA_TASKS_MAX_UPLOAD_BYTES
            most = limit * self.max_files + MULTIPART_ALLOWANCE
            length = request.META.get("CONTENT_LENGTH") or "0"
            length = int(length) if length.isdigit() else 0  # malformed: Django's parser refuses it
            if length > most:
                raise PayloadTooLarge(
                    f"The request is {length:,} bytes; at most {self.max_files} file(s) "
                    f"of {limit:,} bytes each are accepted."
                )
        super().initial(request, *args, **kwargs)

    def uploaded(self, request: Request, field: str) -> tuple[list, Options]:
        if not request.user.has_perm("media_tasks.add_image"):
            raise PermissionDenied("Uploading images needs the media_tasks.add_image permission.")
        files = request.FILES.getlist(field)
        if self.size_limit.too_large is not None:
            raise PayloadTooLarge(
                f"{services.display_name(self.size_limit.too_large)!r} is larger than "
                f"{settings.MEDIA_TASKS_MAX_UPLOAD_BYTES:,} bytes."
            )
        options = OptionsRequest(data=request.data)
        options.is_valid(raise_exception=True)
        return files, options.validated_data["options"]


UPLOAD_ERRORS = {400: VALIDATION_ERROR, 403: ErrorResponse, 413: ErrorResponse}


class ImageCollection(_UploadView):
    @extend_schema(
        operation_id="images_upload",
        request={"multipart/form-data": ImageUploadRequest},
        responses={202: ImageResponse, **UPLOAD_ERRORS},
    )
    def post(self, request: Request) -> Response:
        """multipart/form-data: `file`, and optional options (OptionsRequest)."""
        files, options = self.uploaded(request, "file")
        if len(files) != 1:
            raise ValidationError(
                {"file": "Send exactly one file in the 'file' field; several go to /api/images/batches/."}
            )
        try:
            services.image_header_check(file=files[0])
            image = services.image_upload(file=files[0], options=options, requested_by=request.user)
        except BadInput as exc:
            raise ValidationError({"file": str(exc)}) from None
        body = image_representation(image, request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(operation_id="images_list", responses={200: ImageListResponse})
    def get(self, request: Request) -> Response:
        images = _visible(request, Image.objects.select_related("job").prefetch_related("renditions"))
        return Response({"results": [image_representation(image, request) for image in images[:LIST_LIMIT]]})


class ImageDetail(APIView):
    @extend_schema(operation_id="images_detail", responses={200: ImageResponse, 404: ErrorResponse})
    def get(self, request: Request, image_id) -> Response:
        image = (
            _visible(request, Image.objects.select_related("job").prefetch_related("renditions"))
            .filter(pk=image_id)
            .first()
        )
        if image is None:
            raise NotFound("No such image.")
        return Response(image_representation(image, request))


class BatchCollection(_UploadView):
    @property
    def max_files(self) -> int:
        return settings.MEDIA_TASKS_MAX_BATCH_FILES

    @extend_schema(
        operation_id="images_batches_upload",
        request={"multipart/form-data": BatchUploadRequest},
        responses={202: BatchResponse, **UPLOAD_ERRORS},
    )
    def post(self, request: Request) -> Response:
        """multipart/form-data: `files` (repeated), and optional options."""
        files, options = self.uploaded(request, "files")
        try:
            for file in files:
                services.image_header_check(file=file)
            batch = services.batch_upload(files=files, options=options, requested_by=request.user)
        except BadInput as exc:
            raise ValidationError({"files": str(exc)}) from None
        body = batch_representation(batch, request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class BatchDetail(APIView):
    @extend_schema(operation_id="images_batches_detail", responses={200: BatchResponse, 404: ErrorResponse})
    def get(self, request: Request, batch_id) -> Response:
        batch = _visible(request, ImageBatch.objects.all()).filter(pk=batch_id).first()
        if batch is None:
            raise NotFound("No such batch.")
        return Response(batch_representation(batch, request))


class ImageFileDownload(APIView):
    """GET /api/images/<id>/files/<rendition name or "original">: the file,
    to the image's owner and users with media_tasks.view_image; 404 to
    anyone else. Nothing under MEDIA_ROOT is served publicly (originals keep
    their EXIF, GPS included). Behind compose's nginx the file is sent by
    nginx from an internal location (X-Accel-Redirect,
    MEDIA_TASKS_X_ACCEL_REDIRECT_PREFIX); otherwise Django streams it."""

    @extend_schema(
        operation_id="images_file",
        responses={200: OpenApiTypes.BINARY, 404: ErrorResponse},
        description=(
            "An image's original (as an attachment) or one of its renditions, to its owner and users with "
            "media_tasks.view_image; 404 to anyone else."
        ),
    )
    def get(self, request: Request, image_id, name: str) -> HttpResponseBase:
        image = _visible(request, Image.objects.all()).filter(pk=image_id).first()
        if image is None:
            raise NotFound("No such image.")
        try:
            served = services.image_file(image=image, name=name)
        except BadInput as exc:
            raise NotFound(str(exc)) from None
        prefix = settings.MEDIA_TASKS_X_ACCEL_REDIRECT_PREFIX
        if prefix:
            response = HttpResponse(content_type=served.content_type)
            response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(served.field.name)
        else:
            try:
                handle = served.field.open("rb")
            except FileNotFoundError:
                raise NotFound("The file is gone from storage.") from None
            response = FileResponse(handle, content_type=served.content_type)
        # An original is whatever was uploaded: downloaded, never rendered
        # in the browser; nosniff keeps a rendition an image.
        disposition = "attachment" if name == services.ORIGINAL else "inline"
        response["Content-Disposition"] = content_disposition_header(disposition, served.download_name)
        response["X-Content-Type-Options"] = "nosniff"
        # Someone's picture: no shared cache keeps a copy.
        response["Cache-Control"] = "private, no-store"
        return response
