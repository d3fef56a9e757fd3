"""The local SMTP sink behind `manage.py smtp_sink`: an aiosmtpd server that
stores every message it receives (ReceivedEmail), so a developer sees what
the kit sent at /mail/sink/ and nothing leaves the machine."""

from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from asgiref.sync import sync_to_async

from jobs.storable import storable_text
from mail_tasks.models import ReceivedEmail


def _decoded(value) -> str:
    """A raw header value (compat32) as text: encoded words decoded where
    they can be, left as they came where not (an unknown charset, broken
    base64), and what PostgreSQL cannot store (NUL, undecodable bytes)
    replaced. The modern header parser is not used: it has crashes of its
    own (an IndexError on some malformed headers)."""
    try:
        text = str(make_header(decode_header(str(value))))
    except Exception:
        text = str(value)
    return storable_text(text)


def _raw_headers(raw: bytes):
    return BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)


def received_store(*, peer: str, mail_from: str, rcpt_to: list[str], raw: bytes) -> ReceivedEmail:
    """Store any message that arrives: the sink shows what was sent, broken
    or not (the raw bytes are kept as they came)."""
    headers = _raw_headers(raw)
    return ReceivedEmail.objects.create(
        peer=storable_text(peer)[:100],
        mail_from=storable_text(mail_from)[:320],
        rcpt_to=[storable_text(address) for address in rcpt_to],
        subject=_decoded(headers.get("Subject", ""))[:998],
        message_id=_decoded(headers.get("Message-ID", "")).strip()[:255],
        raw=raw,
    )


def _part_text(part) -> str:
    """A part's text: decoded by its declared charset when Python knows
    it, else as UTF-8 with replacement characters (an unknown or lying
    charset, a broken transfer encoding)."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except Exception:
        pass
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    return payload.decode("utf-8", "replace")


def received_view(raw: bytes) -> dict:
    """What the sink's detail page shows of a raw message: headers, text,
    HTML and attachment names. Never raises, whatever arrived: a message
    the MIME parser cannot take apart is shown as its raw text."""
    headers = [(storable_text(name), _decoded(value)) for name, value in _raw_headers(raw).items()]
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        attachments = [storable_text(str(part.get_filename() or "(unnamed)")) for part in message.iter_attachments()]
        return {
            "headers": headers,
            "text": _part_text(text) if text is not None else "",
            "html": _part_text(html) if html is not None else "",
            "attachments": attachments,
            "problem": "",
        }
    except Exception as exc:
        return {
            "headers": headers,
            "text": raw.decode("utf-8", "replace"),
            "html": "",
            "attachments": [],
            "problem": f"The message could not be taken apart ({type(exc).__name__}: {exc}); its raw text follows.",
        }


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
