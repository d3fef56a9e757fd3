"""Pages of the local SMTP sink (`manage.py smtp_sink`): what the kit sent,
for staff only."""

from email import policy
from email.parser import BytesParser

from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from mail_tasks.models import ReceivedEmail

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
    message = BytesParser(policy=policy.default).parsebytes(bytes(received.raw))
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    attachments = [part.get_filename() for part in message.iter_attachments()]
    return TemplateResponse(
        request,
        "mail_tasks/sink/detail.html",
        {
            "title": received.subject or "(no subject)",
            "received": received,
            "headers": list(message.items()),
            "text": text.get_content() if text else "",
            # Shown in a sandboxed iframe: no scripts, its own origin.
            "html": html.get_content() if html else "",
            "attachments": attachments,
        },
    )
