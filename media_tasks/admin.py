"""Images in the admin: a list with each image's job status, a read-only
page with its renditions, an upload page (the admin's "Add image") that
stores and enqueues like the API, and a "regenerate" action.

Rows are only created and changed by media_tasks.services, never edited
here: a rendition is whatever the last job made.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from jobs.admin import job_status_filter
from jobs.exceptions import BadInput
from jobs.subject_admin import FollowsJobAdminMixin
from media_tasks import services
from media_tasks.conf import OUTPUT_FORMATS, POSITIONS, QUALITY_RANGE, WATERMARK_TEXT_MAX, Options, Watermark
from media_tasks.models import Image, ImageBatch, Rendition


class _MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class _MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, widget=_MultipleFileInput(attrs={"accept": "image/*"}), **kwargs)

    def clean(self, data, initial=None):
        files = data if isinstance(data, (list, tuple)) else [data]
        return [super(_MultipleFileField, self).clean(file, initial) for file in files]


class UploadForm(forms.Form):
    files = _MultipleFileField(label="Images", help_text="One or more; several are uploaded as one batch.")
    format = forms.ChoiceField(choices=[("", "As configured"), *((f, f) for f in OUTPUT_FORMATS)], required=False)
    quality = forms.IntegerField(min_value=QUALITY_RANGE[0], max_value=QUALITY_RANGE[1], required=False)
    strip_metadata = forms.BooleanField(initial=True, required=False, help_text="GPS is removed either way.")
    watermark_text = forms.CharField(max_length=WATERMARK_TEXT_MAX, required=False)
    watermark_position = forms.ChoiceField(choices=[(p, p) for p in POSITIONS], initial="bottom-right")
    watermark_opacity = forms.FloatField(min_value=0.01, max_value=1, initial=0.5)

    def clean(self):
        data = super().clean()
        try:
            mark = None
            if data.get("watermark_text"):
                mark = Watermark(
                    text=data["watermark_text"],
                    position=data.get("watermark_position", "bottom-right"),
                    opacity=data.get("watermark_opacity") or 0.5,
                )
            data["options"] = Options(
                format=data.get("format") or None,
                quality=data.get("quality"),
                strip_metadata=bool(data.get("strip_metadata")),
                watermark=mark,
            )
        except BadInput as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class RenditionInline(admin.TabularInline):
    model = Rendition
    extra = 0
    can_delete = False
    fields = readonly_fields = ["name", "preview", "format", "width", "height", "bytes", "made_at"]

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="file")
    def preview(self, rendition):
        # The authorised download view: nothing under MEDIA_ROOT is public.
        url = reverse("media_tasks:image-file", args=[rendition.image_id, rendition.name])
        return format_html('<a href="{}"><img src="{}" alt="" style="max-height:60px;max-width:120px"></a>', url, url)


@admin.register(Image)
class ImageAdmin(FollowsJobAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "status_column",
        "format",
        "dimensions",
        "rendition_count",
        "batch",
        "requested_by",
        "created_at",
    ]
    list_filter = [job_status_filter("job__status"), "format", "created_at"]
    list_select_related = ["job", "requested_by"]
    search_fields = ["original_name"]
    fields = readonly_fields = [
        "id",
        "original_name",
        "original",
        "original_bytes",
        "status_column",
        "job_column",
        "error",
        "format",
        "dimensions",
        "options",
        "batch",
        "requested_by",
        "created_at",
    ]
    inlines = [RenditionInline]
    actions = ["regenerate"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(rendition_total=Count("renditions"))

    def has_change_permission(self, request, obj=None):
        return False  # read-only: what an image is comes from its upload and its job

    def has_regenerate_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_image")

    @admin.display(description="size")
    def dimensions(self, image):
        return f"{image.width}x{image.height}" if image.width else "-"

    @admin.display(description="renditions", ordering="rendition_total")
    def rendition_count(self, image):
        return image.rendition_total

    @admin.action(description="Regenerate renditions of the selected images", permissions=["regenerate"])
    def regenerate(self, request, queryset):
        count = 0
        for image in queryset.select_related("job"):
            with transaction.atomic():
                job = services.renditions_enqueue(image=image, requested_by=request.user)
                self.log_change(request, image, f"Regenerating renditions as job {job.pk}.")
            count += 1
        messages.success(request, f"Regenerating the renditions of {count} image(s).")

    def add_view(self, request, form_url="", extra_context=None):
        """Upload instead of a model form: the service stores the file under
        a generated name and enqueues its job."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            uploaded = self._upload(request, form.cleaned_data)
            if uploaded:
                return HttpResponseRedirect(reverse("admin:media_tasks_image_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Upload images",
            "opts": self.opts,
            "form": form,
            "max_bytes": settings.MEDIA_TASKS_MAX_UPLOAD_BYTES,
        }
        return TemplateResponse(request, "admin/media_tasks/image/upload.html", context)

    def _upload(self, request, data) -> list[Image]:
        files, options = data["files"], data["options"]
        try:
            for file in files:
                services.image_header_check(file=file)
            if len(files) == 1:
                images = [services.image_upload(file=files[0], options=options, requested_by=request.user)]
            else:
                batch = services.batch_upload(files=files, options=options, requested_by=request.user)
                images = list(batch.images.all())
        except BadInput as exc:
            messages.error(request, str(exc))
            return []
        for image in images:
            self.log_addition(request, image, "Uploaded.")
        messages.success(request, f"Uploaded {len(images)} image(s); their renditions are being made.")
        return images


@admin.register(ImageBatch)
class ImageBatchAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status_column", "progress_column", "requested_by", "created_at"]
    list_select_related = ["requested_by"]
    fields = readonly_fields = ["id", "status_column", "progress_column", "images_link", "requested_by", "created_at"]

    def has_add_permission(self, request):
        return False  # batches are made by uploading several images

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="status")
    def status_column(self, batch):
        return services.batch_summary(batch=batch)["status"]

    @admin.display(description="progress")
    def progress_column(self, batch):
        return services.batch_summary(batch=batch)["progress"]["message"]

    @admin.display(description="images")
    def images_link(self, batch):
        url = reverse("admin:media_tasks_image_changelist") + f"?batch__exact={batch.pk}"
        return format_html('<a href="{}">the images of this batch</a>', url)
