"""Report runs in the admin: the list with each run's job status and a
download link, a "Request a report" page (the admin's Add) that checks and
enqueues like the API, and a "regenerate" action.

Runs are made and changed by reports.services only, never edited here.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from jobs.admin import job_status_filter
from jobs.storable import storable_text, unstorable_reason
from jobs.subject_admin import FollowsJobAdminMixin
from reports import services
from reports.mailing import mail_available
from reports.models import ReportFormat, ReportRun
from reports.params import InvalidParams
from reports.registry import report_types


def _type_choices() -> list[tuple[str, str]]:
    return [(name, f"{report.title} ({name})") for name, report in report_types().items()]


class _RedisplayableJSONField(forms.JSONField):
    """Django's JSONField, except that a value holding a lone surrogate is
    shown again (with the form's error) \\u-escaped: written as it is, it
    cannot be encoded into the page, and the error page would be a 500."""

    def prepare_value(self, value):
        text = super().prepare_value(value)
        if isinstance(text, str) and storable_text(text) != text:
            return json.dumps(value, ensure_ascii=True, cls=self.encoder)
        return text


class RequestForm(forms.Form):
    type = forms.ChoiceField(choices=_type_choices)
    format = forms.ChoiceField(choices=ReportFormat.choices)
    params = _RedisplayableJSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 5, "cols": 60}),
        help_text=(
            'A JSON object, e.g. {"period": {"last_days": 7}, "bucket": "day"}. Omitted parameters take their defaults.'
        ),
    )
    email_to = forms.CharField(
        required=False, help_text="Comma-separated addresses to send the file to when it is ready (optional)."
    )

    def clean_params(self):
        # What PostgreSQL cannot store (a NUL, a lone surrogate, 1e400) is
        # the form's error here, not a 500 when the run is saved.
        params = self.cleaned_data["params"]
        if found := unstorable_reason(params, "params"):
            raise forms.ValidationError(f"{found[0]} {found[1]}.")
        return params

    def clean_email_to(self) -> list[str]:
        return [address.strip() for address in self.cleaned_data["email_to"].split(",") if address.strip()]


@admin.register(ReportRun)
class ReportRunAdmin(FollowsJobAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "report_type",
        "format",
        "status_column",
        "progress_column",
        "owner",
        "rows",
        "size_column",
        "created_at",
        "expires_at",
        "download",
    ]
    list_filter = ["report_type", "format", job_status_filter("job__status"), "created_at"]
    list_select_related = ["job", "owner"]
    search_fields = ["=id", "report_type", "owner__username"]
    fields = readonly_fields = [
        "id",
        "report_type",
        "format",
        "params",
        "owner",
        "email_to",
        "status_column",
        "job_column",
        "error",
        "rows",
        "size_column",
        "stored_as",
        "created_at",
        "generated_at",
        "expires_at",
        "download",
    ]
    actions = ["regenerate"]

    def has_change_permission(self, request, obj=None):
        return False  # read-only: a run is what was asked and what its job made

    def has_regenerate_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_reportrun")

    @admin.display(description="size", ordering="size")
    def size_column(self, run):
        return filesizeformat(run.size) if run.size is not None else "-"

    @admin.display(description="stored as")
    def stored_as(self, run):
        return run.file.name or "-"

    @admin.display(description="file")
    def download(self, run):
        if run.is_expired:
            return "expired"
        if not run.is_ready:
            return "-"
        return format_html('<a href="{}">download</a>', reverse("reports:report-download", args=[run.pk]))

    @admin.action(description="Regenerate the selected reports", permissions=["regenerate"])
    def regenerate(self, request, queryset):
        count = 0
        for run in queryset.select_related("job"):
            with transaction.atomic():
                job = services.report_enqueue(run=run, requested_by=request.user)
                self.log_change(request, run, f"Regenerating as job {job.pk}.")
            count += 1
        messages.success(request, f"Regenerating {count} report(s).")

    def add_view(self, request, form_url="", extra_context=None):
        """A request form instead of a model form: the service checks the
        parameters and enqueues the job, as the API does."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = RequestForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            run = self._request(request, form)
            if run is not None:
                return HttpResponseRedirect(reverse("admin:reports_reportrun_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Request a report",
            "opts": self.opts,
            "form": form,
            "report_types": report_types().values(),
            "mail_available": mail_available(),
        }
        return TemplateResponse(request, "admin/reports/reportrun/request.html", context)

    def _request(self, request, form: RequestForm) -> ReportRun | None:
        data = form.cleaned_data
        try:
            with transaction.atomic():
                run = services.report_request(
                    report_type=data["type"],
                    format=data["format"],
                    params=data["params"],
                    email_to=data["email_to"],
                    owner=request.user,
                )
                self.log_addition(request, run, "Requested.")
        except InvalidParams as exc:
            for field, message in exc.errors.items():
                name = field.split(".", 1)[0]
                form.add_error(
                    name if name in form.fields else None, f"{field}: {message}" if "." in field else message
                )
            return None
        except services.ReportNotAllowed as exc:
            form.add_error(None, str(exc))
            return None
        messages.success(request, f"Requested {run}; it is being generated.")
        return run
