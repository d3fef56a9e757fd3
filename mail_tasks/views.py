"""Pages of the local SMTP sink (`manage.py smtp_sink`): what the kit sent,
for staff only."""

from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from mail_tasks.models import ReceivedEmail
from mail_tasks.sink import received_view

LIST_LIMIT = 200


@staff_member_required
def sink_list(request):
    emails = ReceivedEmail.objects.defer("raw")[:LIST_LIMIT]
    return TemplateResponse(
        request,
        "mail_tasks/sink/list.html",
        {"title": "Received by the local SMTP sink", "emails": emails, "limit": LIST_LIMIT},
    )


@staff_member_required
def sink_detail(request, pk: int):
    received = get_object_or_404(ReceivedEmail, pk=pk)
    # Any message that arrived is shown (unknown charsets, broken MIME):
    # mail_tasks.sink.received_view never raises.
    shown = received_view(bytes(received.raw))
    return TemplateResponse(
        request,
        "mail_tasks/sink/detail.html",
        # The HTML is shown in a sandboxed iframe: no scripts, its own origin.
        {"title": received.subject or "(no subject)", "received": received, **shown},
    )
