"""What is checked and rendered before anything is sent. Every problem is a
BadInput whose message says what to fix; it fails that one message only."""

import unicodedata
from dataclasses import dataclass
from email.utils import parseaddr

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.template import Context, TemplateDoesNotExist, TemplateSyntaxError
from django.template.base import Template
from django.template.loader import get_template

from jobs.exceptions import BadInput

# RFC 5322's limit on a header line; the subject column's length too.
MAX_HEADER_CHARACTERS = 998
# Control characters (Cc: NUL, TAB, VT, ESC, DEL...), Unicode line and
# paragraph separators (some clients break lines on them) and lone
# surrogates (not encodable): none belongs in a header.
_HEADER_FORBIDDEN_CATEGORIES = {"Cc", "Zl", "Zp", "Cs"}


def check_header(value: str, what: str) -> None:
    """A CR or LF would end the header and start a new one (Bcc: ...); any
    other control character is refused as well, at enqueue, rather than
    left to each mail client's reading of it."""
    if "\r" in value or "\n" in value:
        raise BadInput(f"{what} contains a line break (header injection): {value!r}")
    for position, character in enumerate(value):
        if unicodedata.category(character) in _HEADER_FORBIDDEN_CATEGORIES:
            raise BadInput(f"{what} contains the control character {character!r} at position {position}: {value!r}")
    if len(value) > MAX_HEADER_CHARACTERS:
        raise BadInput(f"{what} is {len(value)} characters long; the limit is {MAX_HEADER_CHARACTERS}")


def check_address(value: str, what: str = "recipient") -> str:
    """Accept `a@example.com` or `Name <a@example.com>`; return the bare address."""
    check_header(value, what)
    _, address = parseaddr(value)
    try:
        validate_email(address)
    except ValidationError:
        raise BadInput(f"{what} {value!r} is not a valid email address") from None
    return address


def address_domain(value: str) -> str:
    return parseaddr(value)[1].rpartition("@")[2].lower()


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class MailTemplate:
    """The files of one email template, `<name>/subject.txt`, `<name>/body.txt`
    and optionally `<name>/body.html`, loaded once and rendered per recipient."""

    def __init__(self, name: str):
        self.name = name
        self.subject = self._load("subject.txt")
        self.text = self._load("body.txt")
        self.html = self._load("body.html", required=False)

    def _load(self, filename: str, *, required: bool = True) -> Template | None:
        path = f"{self.name}/{filename}"
        try:
            # The engine's own Template, so the text parts can be rendered
            # without HTML autoescaping ("&" stays "&" in a subject).
            return get_template(path).template
        except TemplateDoesNotExist:
            if required:
                raise BadInput(f"email template {path} does not exist") from None
            return None
        except TemplateSyntaxError as exc:
            raise BadInput(f"email template {path} has a syntax error: {exc}") from None

    def render(self, context: dict) -> Rendered:
        # The subject file's trailing newline is normal; a line break inside
        # the subject (from a context value, say) is refused, not folded away.
        subject = self._render(self.subject, "subject.txt", context, autoescape=False).strip()
        check_header(subject, "subject")
        if not subject:
            raise BadInput(f"email template {self.name}/subject.txt rendered an empty subject")
        text = self._render(self.text, "body.txt", context, autoescape=False)
        html = self._render(self.html, "body.html", context, autoescape=True) if self.html else ""
        return Rendered(subject=subject, text=text, html=html)

    def _render(self, template: Template, filename: str, context: dict, *, autoescape: bool) -> str:
        try:
            return template.render(Context(context, autoescape=autoescape))
        except Exception as exc:
            raise BadInput(
                f"email template {self.name}/{filename} failed to render: {type(exc).__name__}: {exc}"
            ) from None
