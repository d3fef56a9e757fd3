"""Sending a finished report by email, through the mail module
(mail_tasks.services.email_send) when it is installed.

email_send stores the message and its attachment in the caller's
transaction and sends it from a job of its own, with its own retries; a
report job never talks SMTP. Without mail_tasks the addresses are kept on
the run and nothing is sent.
"""

import logging

from django.conf import settings
from django.urls import reverse

from reports.models import ReportRun
from reports.registry import report_types

logger = logging.getLogger(__name__)

TEMPLATE = "reports/mail/ready"


def _email_send():
    try:
        from mail_tasks.services import email_send
    except ImportError:
        return None
    return email_send


def mail_available() -> bool:
    return _email_send() is not None


def report_email(run: ReportRun) -> int:
    """Send the run's file to each of run.email_to; how many were queued.

    One message per recipient and run (an idempotency key), so a redelivered
    job does not mail twice. Files over REPORTS_EMAIL_MAX_ATTACHMENT_BYTES
    are linked, not attached: relays refuse large messages.
    """
    email_send = _email_send()
    if email_send is None:
        logger.warning("Report %s: mail_tasks is not installed; not emailing %s.", run.id, ", ".join(run.email_to))
        return 0
    attach = run.size is not None and run.size <= settings.REPORTS_EMAIL_MAX_ATTACHMENT_BYTES
    context = {
        "title": getattr(report_types().get(run.report_type), "title", run.report_type),
        "rows": run.rows,
        "size": run.size,
        "format": run.format.upper(),
        "attached": attach,
        "download_url": settings.REPORTS_SITE_URL.rstrip("/") + reverse("reports:report-download", args=[run.id]),
        "expires_at": run.expires_at,
    }
    attachments = []
    if attach:
        with run.file.open("rb") as file:
            attachments.append((run.download_name, file.read(), ""))
    for address in run.email_to:
        email_send(
            template=TEMPLATE,
            to=address,
            context=context,
            attachments=attachments,
            idempotency_key=f"reports:{run.id}:{address}",
            requested_by=run.owner,
        )
    return len(run.email_to)
