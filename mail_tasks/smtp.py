"""Talking SMTP: one connection reused for many messages, and the server's
answers sorted into what to do about them.

Django's backend opens the connection (host, port, TLS, login and timeout
from the EMAIL_* settings); the messages go through the SMTP commands
directly, because `sendmail` drops the server's answer to DATA ("250 2.0.0
queued as 4F2A1"), which is the proof of delivery the admin shows.
"""

import functools
import io
import re
import secrets
import smtplib
from email.generator import BytesGenerator
from email.policy import Compat32

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import sanitize_address

from jobs.exceptions import BadInput, TransientError
from mail_tasks.rendering import Rendered


class ConnectionFailure(TransientError):
    """No usable connection (refused, reset, timed out, 421 closing). Whether
    the message in flight was accepted is unknown."""


class TemporaryFailure(TransientError):
    """The server answered 4xx for this message: try it again later."""


class PermanentFailure(Exception):
    """The server answered 5xx for this message: it will never be accepted."""


class MailConfigurationError(Exception):
    """Login or TLS refused: no message can go until settings change."""


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return f"{code} {' '.join(text.split())}"


def build_message(
    *, from_email: str, to: str, message_id: str, rendered: Rendered, attachments=()
) -> tuple[str, str, bytes]:
    """(envelope sender, envelope recipient, message bytes), with the stored
    Message-ID, so every attempt sends the same identity."""
    email = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=from_email,
        to=[to],
        headers={"Message-ID": message_id},
    )
    if rendered.html:
        email.attach_alternative(rendered.html, "text/html")
    for filename, content, mimetype in attachments:
        email.attach(filename, content, mimetype or None)
    encoding = email.encoding or settings.DEFAULT_CHARSET
    try:
        message = email.message()
        _set_boundaries(message, rendered, attachments)
        data = _flatten(message)
        return _sanitized_sender(from_email, encoding), _envelope_recipient(to, encoding), data
    except ValueError as exc:  # BadHeaderError is one
        raise BadInput(f"message cannot be built: {exc}") from None


def _set_boundaries(message, rendered: Rendered, attachments) -> None:
    """Give each multipart its boundary before the message is flattened.

    Left to itself, the standard library draws one per multipart and checks
    it against the parts with a regular expression compiled for that
    boundary alone: a compilation per message, which also evicts the
    patterns every other header and part reuses from `re`'s cache. That was
    two fifths of what building a campaign message cost. The same check is a
    substring search here: 128 random bits, redrawn in the impossible case
    that a part contains them (a part cannot hold a boundary line without
    holding the boundary)."""
    contents = [rendered.text, rendered.html]
    contents += [content.decode("latin-1") if isinstance(content, bytes) else content for _, content, _ in attachments]
    for part in message.walk():
        if part.is_multipart():
            while True:
                boundary = f"==============={secrets.token_hex(16)}=="
                if not any(boundary in content for content in contents):
                    break
            part.set_boundary(boundary)


class _HeaderPolicy(Compat32):
    """The policy Django's messages use (compat32), with a shortcut for the
    common header: printable ASCII with no surrounding whitespace that fits
    on its line, which compat32 folds into itself, and so is written as is.
    Every other header (long, non-ASCII, already encoded) takes compat32's
    own path. Folding through email.header.Header was a third of what
    building a message cost; tests/mail_tasks compares the two outputs."""

    def fold_binary(self, name, value):
        if (
            isinstance(value, str)
            and value
            and value.isascii()
            and value.isprintable()
            and value == value.strip()
            and len(name) + 2 + len(value) <= (self.max_line_length or 1_000_000)
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_HEADER_POLICY = _HeaderPolicy()


def _flatten(message) -> bytes:
    """message.as_bytes(linesep="\r\n") as Django writes it (no ">From "
    mangling), with _HeaderPolicy."""
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_HEADER_POLICY).flatten(message, linesep="\r\n")
    return out.getvalue()


# An address with nothing to encode or quote: a dot-atom local part and an
# ASCII host name (labels of at most 63 characters, as IDNA allows).
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\Z"
)


def _envelope_recipient(address: str, encoding: str) -> str:
    """sanitize_address(address, encoding), which returns a plain address as
    it is: it parses every address with the email package's header parser,
    and that was a fifth of what building a campaign message cost. A name,
    a quoted or non-ASCII part, anything else takes Django's own path
    (tests/mail_tasks compares the two)."""
    if _PLAIN_ADDRESS.match(address):
        return address
    return sanitize_address(address, encoding)


@functools.lru_cache(maxsize=64)
def _sanitized_sender(address: str, encoding: str) -> str:
    """A worker sends a whole batch from one address: checked and encoded
    once. (Bad addresses raise, and exceptions are not cached.)"""
    return sanitize_address(address, encoding)


class SmtpSession:
    """One SMTP connection, opened on first use and reused for every message
    until closed; a context manager."""

    def __init__(self):
        self.backend = EmailBackend(fail_silently=False)
        self.connections_opened = 0

    def __enter__(self) -> "SmtpSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.backend.close()
        except (smtplib.SMTPException, OSError):
            self.backend.connection = None  # it is gone either way

    def _smtp(self) -> smtplib.SMTP:
        if self.backend.connection is None:
            where = f"{self.backend.host}:{self.backend.port}"
            try:
                self.backend.open()
                self.backend.connection.ehlo_or_helo_if_needed()
            except (smtplib.SMTPAuthenticationError, smtplib.SMTPNotSupportedError) as exc:
                self.close()
                raise MailConfigurationError(f"{where} refused the login or TLS: {describe(exc)}") from None
            except OSError as exc:  # smtplib's errors are OSErrors too
                self.close()
                raise ConnectionFailure(f"cannot connect to {where}: {describe(exc)}") from None
            self.connections_opened += 1
        return self.backend.connection

    def deliver(self, *, sender: str, recipient: str, data: bytes) -> str:
        """Send one message; return the server's final answer ("250 ...").

        Raises TemporaryFailure (4xx) or PermanentFailure (5xx) for this
        message, with the connection still usable, or ConnectionFailure.
        """
        smtp = self._smtp()
        try:
            code, text = smtp.mail(sender)
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            # The server dropped an idle connection (or capped messages per
            # connection). Nothing of this message was sent yet: reconnect
            # once and go on.
            self.close()
            smtp = self._smtp()
            code, text = self._guard(smtp.mail, sender)
        self._check(smtp, code, text)
        self._check(smtp, *self._guard(smtp.rcpt, recipient))
        code, text = self._guard(smtp.data, data)
        self._check(smtp, code, text)
        return _reply(code, text)

    def _guard(self, command, *args):
        try:
            return command(*args)
        except smtplib.SMTPResponseError as exc:  # DATA refused before the content
            return exc.smtp_code, exc.smtp_error
        except OSError as exc:
            self.close()
            raise ConnectionFailure(f"connection lost: {describe(exc)}") from None

    def _check(self, smtp: smtplib.SMTP, code: int, text) -> None:
        if code < 400:
            return
        reply = _reply(code, text)
        if code == 421:  # "closing transmission channel"
            self.close()
            raise ConnectionFailure(f"server closing the connection: {reply}")
        try:
            smtp.rset()  # ready for the next message on the same connection
        except OSError:
            self.close()
        if code < 500:
            raise TemporaryFailure(reply)
        raise PermanentFailure(reply)
