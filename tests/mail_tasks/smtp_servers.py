"""Real SMTP servers on loopback (aiosmtpd) that record what they accepted:
one that takes everything, one that answers 4xx before 2xx (greylisting),
one that answers 5xx for some recipients."""

import asyncio
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.controller import Controller

from tests.helpers import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    connection: int  # which SMTP connection carried it, counted from 0
    at: float  # time.time() when DATA completed

    @property
    def message_id(self) -> str:
        return self.message["Message-ID"]


class Recording:
    """Accepts every recipient; `delay` seconds per message slows it down."""

    def __init__(self, *, delay: float = 0):
        self.delay = delay
        self.received: list[Received] = []
        self._connections: dict[int, tuple[object, int]] = {}
        self._lock = threading.Lock()

    def refuse(self, address: str) -> str | None:
        """An SMTP reply refusing this recipient, or None to accept it."""
        return None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if reply := self.refuse(address):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self._lock:
            # Keep the session object, so its id is never reused.
            number = self._connections.setdefault(id(session), (session, len(self._connections)))[1]
            message = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message, number, time.time()))
            return f"250 2.0.0 Ok: queued as Q{len(self.received)}"

    @property
    def connections(self) -> int:
        return len({r.connection for r in self.received})

    def recipients(self) -> list[str]:
        return [address for r in self.received for address in r.rcpt_tos]


class Greylisting(Recording):
    """Answers 451 to the first `times` attempts for each recipient."""

    def __init__(self, *, times: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.times = times
        self.refusals: dict[str, int] = {}

    def refuse(self, address):
        with self._lock:
            seen = self.refusals.get(address, 0)
            if seen < self.times:
                self.refusals[address] = seen + 1
                return "451 4.7.1 Greylisted, try again later"
        return None


class Rejecting(Recording):
    """Answers 550 for recipients whose local part starts with `prefix`."""

    def __init__(self, *, prefix: str = "nobody", **kwargs):
        super().__init__(**kwargs)
        self.prefix = prefix

    def refuse(self, address):
        if address.startswith(self.prefix):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        return None


class SmtpServer:
    def __init__(self, handler: Recording, *, port: int | None = None):
        self.handler = handler
        self.port = port or free_port()
        self.controller: Controller | None = None

    def start(self) -> "SmtpServer":
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def env(self) -> dict[str, str]:
        """What a worker process needs to send here."""
        return {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(self.port)}
