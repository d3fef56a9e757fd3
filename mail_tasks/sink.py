"""The local SMTP sink behind `manage.py smtp_sink`: an aiosmtpd server that
stores every message it receives (ReceivedEmail), so a developer sees what
the kit sent at /mail/sink/ and nothing leaves the machine."""

from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from asgiref.sync import sync_to_async

from mail_tasks.models import ReceivedEmail


def received_store(*, peer: str, mail_from: str, rcpt_to: list[str], raw: bytes) -> ReceivedEmail:
    headers = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    return ReceivedEmail.objects.create(
        peer=peer[:100],
        mail_from=mail_from[:320],
        rcpt_to=rcpt_to,
        subject=str(headers.get("Subject", ""))[:998],
        message_id=str(headers.get("Message-ID", "")).strip()[:255],
        raw=raw,
    )


class StoringHandler:
    async def handle_DATA(self, server, session, envelope) -> str:
        # The ORM is synchronous; aiosmtpd's handlers run in its event loop.
        await sync_to_async(received_store)(
            peer=str(session.peer[0]) if session.peer else "",
            mail_from=envelope.mail_from,
            rcpt_to=list(envelope.rcpt_tos),
            raw=envelope.original_content or envelope.content,
        )
        return "250 2.0.0 Stored by the kit's SMTP sink"


def sink_start(*, host: str, port: int) -> Controller:
    """Start the sink in a background thread; stop it with .stop()."""
    controller = Controller(StoringHandler(), hostname=host, port=port, enable_SMTPUTF8=True)
    controller.start()
    return controller
