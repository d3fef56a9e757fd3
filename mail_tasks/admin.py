"""Email in the admin: every outbound message with what the server said, and
campaigns with their progress.

Rows are written by the services and the workers only; the admin views them
and acts through mail_tasks/services.py: retry failed messages (needs
mail_tasks.retry_outboundmessage), pause, resume and cancel campaigns (needs
mail_tasks.control_campaign), start a campaign from a CSV upload (needs
mail_tasks.add_campaign). Every action writes an admin log entry.
"""

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from jobs.exceptions import BadInput
from mail_tasks import services
from mail_tasks.models import FAILED_STATUSES, Campaign, CampaignStatus, MessageStatus, OutboundMessage, ReceivedEmail

CHUNK_SIZE = 500

STATUS_COLOURS = {
    MessageStatus.QUEUED: "#8a6d00",
    MessageStatus.SENDING: "#0b63b6",
    MessageStatus.SENT: "#1e7b34",
    MessageStatus.FAILED: "#b02a37",
    MessageStatus.BOUNCED: "#6f1d1b",
    MessageStatus.CANCELLED: "#495057",
    CampaignStatus.RUNNING: "#0b63b6",
    CampaignStatus.PAUSED: "#8a6d00",
    CampaignStatus.DONE: "#1e7b34",
}


def badge(status: str, label: str):
    return format_html(
        '<span class="mail-status" style="background:{};color:#fff;padding:2px 7px;border-radius:9px;'
        'font-size:0.75rem;white-space:nowrap">{}</span>',
        STATUS_COLOURS.get(status, "#6c757d"),
        label,
    )


@admin.register(OutboundMessage)
class OutboundMessageAdmin(admin.ModelAdmin):
    list_display = [
        "to",
        "subject_column",
        "status_column",
        "attempts",
        "error_column",
        "response_column",
        "campaign",
        "sent_at",
        "created_at",
    ]
    list_filter = ["status", "campaign", "created_at"]
    list_select_related = ["campaign"]
    search_fields = ["to", "=message_id", "=idempotency_key"]
    search_help_text = "Part of the recipient's address, or a whole Message-ID or idempotency key."
    # The unfiltered count(*) next to a filtered one scans the whole table.
    show_full_result_count = False
    actions = ["retry_selected"]
    exclude = ["body_html", "claimed_by", "claimed_until", "context"]
    readonly_fields = ["context_json", "job_link"]

    def has_add_permission(self, request):
        return False  # messages are created by email_send and campaigns

    def has_change_permission(self, request, obj=None):
        return False  # the workers' to write; the detail page is read-only

    def has_retry_permission(self, request, obj=None):
        return request.user.has_perm("mail_tasks.retry_outboundmessage")

    @admin.display(description="subject", ordering="subject")
    def subject_column(self, message):
        return message.subject or format_html("<em>{}</em>", message.template)

    @admin.display(description="status", ordering="status")
    def status_column(self, message):
        return badge(message.status, message.get_status_display())

    @admin.display(description="last error")
    def error_column(self, message):
        return Truncator(message.last_error).chars(80)

    @admin.display(description="SMTP response")
    def response_column(self, message):
        return Truncator(message.smtp_response).chars(60)

    @admin.display(description="context")
    def context_json(self, message):
        if message.context is None:
            return "- (rendered when it was queued)"
        return format_html("<pre>{}</pre>", json.dumps(message.context, indent=2, ensure_ascii=False))

    @admin.display(description="job")
    def job_link(self, message):
        if message.job_id is None:
            return "-"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:jobs_job_change", args=[message.job_id]), message.job_id
        )

    @admin.action(description="Retry the selected failed or bounced messages", permissions=["retry"])
    def retry_selected(self, request, queryset):
        self._retry(request, queryset.select_related("campaign").iterator(chunk_size=CHUNK_SIZE))

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/retry/", view(require_POST(self.retry_view)), name="mail_tasks_outboundmessage_retry"
            ),
            *super().get_urls(),
        ]

    def retry_view(self, request, object_id):
        """The detail page's Retry button."""
        # get_object: an id that is not a number is "no such message" (404),
        # not a ValueError (500).
        message = self.get_object(request, object_id)
        if message is None:
            raise Http404(f"No message with id {object_id!r}.")
        if not self.has_retry_permission(request, message):
            raise PermissionDenied
        self._retry(request, [message])
        return HttpResponseRedirect(reverse("admin:mail_tasks_outboundmessage_change", args=[message.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if message is not None:
            extra_context["can_retry"] = message.status in FAILED_STATUSES and self.has_retry_permission(
                request, message
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def _retry(self, request, candidates) -> None:
        retried, skipped = services.messages_retry(messages=candidates, requested_by=request.user)
        for message in retried:
            self.log_change(request, message, "Queued again for sending.")
        if retried:
            messages.success(request, f"Queued {len(retried)} message(s) again.")
        for reason, count in skipped.items():
            messages.warning(request, f"Skipped {count} message(s): {reason}.")


class CampaignUploadForm(forms.Form):
    name = forms.CharField(max_length=200)
    template = forms.CharField(
        max_length=200, initial="mail_tasks/newsletter", help_text="Folder with subject.txt, body.txt and body.html."
    )
    recipients = forms.FileField(
        help_text="A UTF-8 CSV with an 'email' column; other columns are the template's context."
    )
    from_email = forms.CharField(max_length=320, required=False, help_text="Default: DEFAULT_FROM_EMAIL.")
    batch_size = forms.IntegerField(min_value=1, required=False, help_text="Default: MAIL_BATCH_SIZE.")


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status_column",
        "progress_column",
        "recipients_count",
        "template",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "created_at"]
    search_fields = ["name"]
    actions = ["pause_selected", "resume_selected", "cancel_selected", "retry_failed_selected"]
    readonly_fields = ["progress_column"]

    def get_queryset(self, request):
        return services.campaigns_with_progress(super().get_queryset(request))

    def has_change_permission(self, request, obj=None):
        return False  # steered through the actions, never edited

    def has_delete_permission(self, request, obj=None):
        # Its batches would still run, and fail on a missing campaign:
        # cancel it first.
        if obj is not None and obj.status in (CampaignStatus.RUNNING, CampaignStatus.PAUSED):
            return False
        return super().has_delete_permission(request, obj)

    def has_control_permission(self, request, obj=None):
        return request.user.has_perm("mail_tasks.control_campaign")

    def has_retry_permission(self, request, obj=None):
        return request.user.has_perm("mail_tasks.retry_outboundmessage")

    @admin.display(description="status", ordering="status")
    def status_column(self, campaign):
        return badge(campaign.status, campaign.get_status_display())

    @admin.display(description="progress")
    def progress_column(self, campaign):
        total = campaign.recipients_count or 1
        finished = campaign.sent_count + campaign.failed_count + campaign.cancelled_count
        return format_html(
            '<progress value="{}" max="{}" style="vertical-align:middle"></progress> '
            '<span class="campaign-progress">{} sent, {} failed, {} pending{}</span>',
            finished,
            total,
            campaign.sent_count,
            campaign.failed_count,
            campaign.pending_count,
            f", {campaign.cancelled_count} cancelled" if campaign.cancelled_count else "",
        )

    def _each(self, request, queryset, action, done: str, skipped: str) -> None:
        changed = 0
        for campaign in queryset:
            if action(campaign):
                self.log_change(request, campaign, done.capitalize() + ".")
                changed += 1
        if changed:
            messages.success(request, f"{changed} campaign(s) {done}.")
        if unchanged := len(queryset) - changed:
            messages.warning(request, f"{unchanged} campaign(s) skipped: {skipped}.")

    @admin.action(description="Pause the selected campaigns", permissions=["control"])
    def pause_selected(self, request, queryset):
        self._each(request, queryset, lambda c: services.campaign_pause(campaign=c), "paused", "they were not running")

    @admin.action(description="Resume the selected campaigns", permissions=["control"])
    def resume_selected(self, request, queryset):
        resume = lambda c: services.campaign_resume(campaign=c, requested_by=request.user)  # noqa: E731
        self._each(request, queryset, resume, "resumed", "they were not paused")

    @admin.action(description="Cancel the selected campaigns", permissions=["control"])
    def cancel_selected(self, request, queryset):
        self._each(request, queryset, lambda c: services.campaign_cancel(campaign=c), "cancelled", "they had ended")

    @admin.action(description="Retry all failed messages of the selected campaigns", permissions=["retry"])
    def retry_failed_selected(self, request, queryset):
        for campaign in queryset:
            try:
                count = services.campaign_retry_failed(campaign=campaign, requested_by=request.user)
            except BadInput as exc:
                messages.warning(request, str(exc))
                continue
            if count:
                self.log_change(request, campaign, f"Queued its {count} failed message(s) again.")
            messages.info(request, f"{campaign.name}: {count} failed message(s) queued again.")

    def add_view(self, request, form_url="", extra_context=None):
        """Start a campaign from a CSV upload."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CampaignUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                campaign = services.campaign_create(
                    name=data["name"],
                    template=data["template"],
                    recipients=services.recipients_from_csv(data["recipients"]),
                    from_email=data["from_email"] or None,
                    batch_size=data["batch_size"],
                    created_by=request.user,
                )
            except BadInput as exc:
                form.add_error(None, str(exc))
            else:
                self.log_addition(request, campaign, f"Started from a CSV of {campaign.recipients_count} recipients.")
                messages.success(
                    request,
                    f"Campaign {campaign.name!r} started: {campaign.recipients_count} recipients"
                    f" in {campaign.batches} batch(es).",
                )
                return HttpResponseRedirect(reverse("admin:mail_tasks_campaign_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Start a campaign",
            "form": form,
            "opts": self.opts,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "admin/mail_tasks/campaign/upload.html", context)


@admin.register(ReceivedEmail)
class ReceivedEmailAdmin(admin.ModelAdmin):
    """What the local sink received; the readable view is /mail/sink/."""

    list_display = ["subject", "mail_from", "received_at", "message_id"]
    exclude = ["raw"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
