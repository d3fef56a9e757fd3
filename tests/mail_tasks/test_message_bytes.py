"""The bytes a message goes out as: build_message draws the MIME boundaries
itself and writes short ASCII headers without the email package's folding
machinery (mail_tasks/smtp.py), and must produce what Django's own
as_bytes() produces for the same message, header for header."""

import email
from email import policy

import pytest
from django.core.mail import EmailMultiAlternatives

from mail_tasks import smtp
from mail_tasks.rendering import Rendered

SUBJECTS = [
    "News for Reader 0",
    "two  spaces and a tab\tinside",
    " leading and trailing whitespace ",
    "Café ☕ news",
    "a long subject " * 12,
    "x" * 70,
    "y" * 200,
]
RECIPIENTS = ["reader@example.com", "Reader Name <reader@example.com>", "Zoë Ä <zoe@example.com>", "a@bücher.example"]


def _django_bytes(*, subject: str, to: str, text: str, html: str, attachments=(), boundaries: list[str]) -> bytes:
    """The message as Django writes it, with the same boundaries."""
    message = EmailMultiAlternatives(
        subject=subject, body=text, from_email="kit@example.com", to=[to], headers={"Message-ID": "<1@x>"}
    )
    if html:
        message.attach_alternative(html, "text/html")
    for attachment in attachments:
        message.attach(*attachment)
    mime = message.message()
    multiparts = [part for part in mime.walk() if part.is_multipart()]
    assert len(multiparts) == len(boundaries)
    for part, boundary in zip(multiparts, boundaries, strict=True):
        part.set_boundary(boundary)
    return mime.as_bytes(linesep="\r\n")


def _boundaries(data: bytes) -> list[str]:
    return [part.get_boundary() for part in email.message_from_bytes(data).walk() if part.is_multipart()]


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    # Both messages are built within the same second only by luck otherwise.
    monkeypatch.setattr(
        "django.core.mail.message.formatdate", lambda localtime=False: "Sun, 06 Dec 2026 08:00:00 -0000"
    )


@pytest.mark.parametrize("subject", SUBJECTS)
@pytest.mark.parametrize("to", RECIPIENTS)
def test_the_bytes_are_djangos_own(subject, to):
    rendered = Rendered(subject=subject, text="Hello\n", html="<p>Hello</p>\n")

    _, _, data = smtp.build_message(from_email="kit@example.com", to=to, message_id="<1@x>", rendered=rendered)

    assert data == _django_bytes(
        subject=subject, to=to, text=rendered.text, html=rendered.html, boundaries=_boundaries(data)
    )


def test_with_attachments_and_without_html_too():
    attachments = [("report.csv", b"a,b\r\n1,2\r\n", "text/csv"), ("blob.bin", bytes(range(256)), "")]
    rendered = Rendered(subject="Your report", text="Attached.\n", html="")

    _, _, data = smtp.build_message(
        from_email="kit@example.com",
        to="reader@example.com",
        message_id="<1@x>",
        rendered=rendered,
        attachments=attachments,
    )

    expected = _django_bytes(
        subject="Your report",
        to="reader@example.com",
        text=rendered.text,
        html="",
        attachments=attachments,
        boundaries=_boundaries(data),
    )
    assert data == expected
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert [part.get_filename() for part in parsed.iter_attachments()] == ["report.csv", "blob.bin"]
    assert parsed["Subject"] == "Your report"


def test_every_multipart_gets_its_own_boundary_that_no_part_contains(monkeypatch):
    # The first draw is in the body (as if a recipient's context held it): drawn again.
    draws = iter(["aaaa", "bbbb", "cccc"])
    monkeypatch.setattr(smtp.secrets, "token_hex", lambda nbytes: next(draws))
    rendered = Rendered(subject="s", text="quoting ===============aaaa== here\n", html="<p>h</p>")

    _, _, data = smtp.build_message(
        from_email="kit@example.com",
        to="reader@example.com",
        message_id="<1@x>",
        rendered=rendered,
        attachments=[("a.txt", b"text", "text/plain")],
    )

    assert _boundaries(data) == ["===============bbbb==", "===============cccc=="]
    parsed = email.message_from_bytes(data, policy=policy.default)
    # Lines end in CRLF on the wire.
    assert parsed.get_body(("plain",)).get_content().rstrip() == "quoting ===============aaaa== here"
    assert parsed.get_body(("html",)).get_content().rstrip() == "<p>h</p>"


HEADER_VALUES = [
    "plain value",
    "two  spaces",
    " leading",
    "trailing ",
    "trailing two  ",
    "a\ttab",
    "café",
    "",
    "x" * 70,
    "x" * 71,
    "words " * 20,
    "folded\r\n continuation",
    "<179654428797.17325.17148050064633221707@localhost>",
]


@pytest.mark.parametrize("value", HEADER_VALUES)
@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_each_header_is_folded_as_compat32_folds_it(value, linesep):
    mine = smtp._HEADER_POLICY.clone(linesep=linesep)
    stdlib = policy.compat32.clone(linesep=linesep)

    assert mine.fold_binary("Subject", value) == stdlib.fold_binary("Subject", value)


ENVELOPE_ADDRESSES = [
    *RECIPIENTS,
    "A.B@Example.COM",
    "o'neil+news@sub.example.co.uk",
    "#!$%&*/=?^_`{|}~-@example.com",
    "x@localhost",
    "ABC@XN--BCHER-KVA.COM",
    '"quoted local"@example.com',
    "dots..twice@example.com",
    ".leading@example.com",
    "zoë@example.com",
    "a@" + "l" * 63 + ".example",
]


@pytest.mark.parametrize("address", ENVELOPE_ADDRESSES)
def test_the_envelope_recipient_is_djangos_own(address):
    from django.core.mail.message import sanitize_address

    assert smtp._envelope_recipient(address, "utf-8") == sanitize_address(address, "utf-8")


@pytest.mark.parametrize("address", ["a@" + "l" * 64 + ".example", "Name <a@example.com>", "a@b..example"])
def test_an_address_that_is_not_plain_takes_djangos_path(address, monkeypatch):
    seen = []
    monkeypatch.setattr(smtp, "sanitize_address", lambda value, encoding: seen.append(value) or value)

    smtp._envelope_recipient(address, "utf-8")

    assert seen == [address]
