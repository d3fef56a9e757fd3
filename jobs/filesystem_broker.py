"""The embedded default's broker: kombu's filesystem transport, made to keep
the promises the kit makes on RabbitMQ.

kombu's own transport (kombu.transport.filesystem) is a fine idea with four
gaps, each closed here:

- Pickup. A consumer that finds nothing, or holds its prefetch, sleeps a
  whole second (virtual transports' polling_interval), so a worker took 1 to
  3 messages a second and an idle one ~0.6 s to start a job. Here it sleeps
  MIN_POLL_SECONDS while it holds messages or has just found some, backing
  off to MAX_POLL_SECONDS only while its queues stay empty.
- Priorities. kombu names a file by its publish time and reads the queue
  in name order: first in, first out. Here the name starts with the
  priority's rank, so the highest priority is read first and publish
  time orders each priority.
- Losing a message. kombu moves a file out of the queue when it is read
  and forgets it; an acknowledgement is bookkeeping in the consumer's
  memory, so a worker killed mid-task loses what it held (RabbitMQ would
  deliver it again). Here a read moves the file into a claim folder of the
  consuming process, which holds a lock on it for its life; the ack deletes
  the file, a reject puts it back. When a process dies its lock goes with
  it, and the next consumer to look (every ORPHAN_CHECK_SECONDS) puts what
  it held back in the queue, marked redelivered, in its old place.
- Torn or doubled reads. kombu writes a message into the queue folder in
  place (a reader can list it while it is still empty) and moves it out
  with shutil.move, which across file systems (the system temp folder on
  tmpfs) is copy-then-delete, so two consumers can both get it. Here a
  message is written beside the queue and renamed into it, and claimed by
  one rename within one file system: exactly one consumer wins.

Every consumer polls the folder; nothing is pushed. It is a broker for one
machine and a first run, not for production: RabbitMQ is.

Written against kombu 5.7.0. kombu has no public API for extending a
virtual transport, so this subclass overrides its Channel's internals
(_put, _get, _get_many, _restore, basic_* bookkeeping, QoS.can_consume,
the Transport's _deliver) and knows the filesystem transport's exchange
tables (<control folder>/<exchange>.exchange, a JSON list): the one place
in the kit that does (README, "Dependencies' internals").
tests/test_embedded_broker.py runs it on real worker processes; a kombu
upgrade that moves any of these fails there.
"""

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from functools import cached_property
from pathlib import Path
from queue import Empty

from celery import current_app
from django.conf import settings
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

from jobs.queues import MAX_PRIORITY

logger = logging.getLogger(__name__)

# A consumer that holds its prefetch, or that found a message on its last
# look, looks again after this long: a freed slot is refilled within a few
# milliseconds. While its queues stay empty the wait doubles up to
# MAX_POLL_SECONDS: an idle consumer lists the folder 50 times a second
# (about 1% of a core each, measured: two workers and Flower), and a job
# posted to an idle stack waits 10 ms on average for a worker to look.
MIN_POLL_SECONDS = 0.002
MAX_POLL_SECONDS = 0.02
# How often a consumer looks for messages held by a process that died.
ORPHAN_CHECK_SECONDS = 2.0
# One listing of the queue folder serves every channel of a process (a
# worker's tasks and its remote control) for this long: listing a folder of
# a thousand messages costs a millisecond, once per message it was four.
# A name in it that another consumer took since fails its rename and is
# skipped; a message published since waits this much longer at most.
LISTING_SECONDS = 0.01
SUFFIX = ".msg"
LOCK_NAME = "lock"


def message_name(queue: str, priority: int | None) -> str:
    """The file name of a message: priority rank, publish time, a unique id,
    then the queue (kombu's `<anything without a dot>.<queue>.msg`, which its
    _size and _purge read). Sorting names sorts by priority, then age."""
    clamped = min(max(priority or 0, 0), MAX_PRIORITY)
    return f"{MAX_PRIORITY - clamped:02d}-{time.time_ns():020d}-{uuid.uuid4().hex}.{queue}{SUFFIX}"


def queue_of(name: str) -> str:
    return name.partition(".")[2][: -len(SUFFIX)]


class ClaimFolder:
    """The folder where one process keeps the messages it has read and not
    yet acknowledged, and the lock on it that lasts as long as the process.

    fcntl.lockf (POSIX record locks): the kernel drops it when the process
    dies however it dies, and, unlike flock, a forked child (a prefork pool
    process) does not inherit it, so a pool outliving its worker keeps
    nothing locked.
    """

    _mine: dict[tuple[int, Path], "ClaimFolder"] = {}
    _mine_lock = threading.Lock()

    def __init__(self, path: Path, lock_fd: int):
        self.path = path
        self.lock_fd = lock_fd

    @classmethod
    def of_this_process(cls, root: Path) -> "ClaimFolder":
        key = (os.getpid(), root)
        with cls._mine_lock:
            if key not in cls._mine:
                cls._mine[key] = cls._create(root)
            return cls._mine[key]

    @staticmethod
    def prefix_of_this_process() -> str:
        """How the names of this process's claim folders begin."""
        return f"{socket.gethostname()}-{os.getpid()}-"

    @classmethod
    def _create(cls, root: Path) -> "ClaimFolder":
        # Locked under a dotted name that orphan checks skip, then renamed:
        # no one ever sees the folder unlocked while its owner lives.
        name = f"{cls.prefix_of_this_process()}{uuid.uuid4().hex[:8]}"
        staging = root / f".{name}"
        staging.mkdir(parents=True)
        fd = os.open(staging / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        staging.rename(root / name)
        return cls(root / name, fd)


def _requeue(claimed: Path, queue_folder: Path, staging_folder: Path) -> None:
    """Put a claimed message back in the queue under its own name (its old
    place in line), marked redelivered as RabbitMQ marks a requeued message:
    Celery requeues a task whose worker died only on its first delivery."""
    payload = loads(claimed.read_bytes())
    payload["redelivered"] = True
    staged = staging_folder / claimed.name
    staged.write_bytes(dumps(payload).encode())
    os.rename(staged, queue_folder / claimed.name)
    claimed.unlink()


class Channel(filesystem.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # delivery tag -> the claimed file of an unacknowledged message.
        self._claims: dict[str, Path] = {}
        self._no_ack_queues: set[str] = set()
        self._round_robin = 0
        self._orphans_checked_at = 0.0
        # Whether the last look found the queues empty (back off), as
        # opposed to a prefetch held full (look again soon).
        self.found_nothing = True

    @property
    def queue_folder(self) -> Path:
        return Path(self.data_folder_in)

    @property
    def claim_root(self) -> Path:
        return Path(self.transport_options.get("claim_folder") or self.queue_folder.parent / "claimed")

    @cached_property
    def staging_folder(self) -> Path:
        folder = Path(self.transport_options.get("staging_folder") or self.queue_folder.parent / "staging")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # -- publishing ---------------------------------------------------------

    def _put(self, queue, payload, **kwargs):
        name = message_name(queue, payload.get("properties", {}).get("priority"))
        staged = self.staging_folder / name
        staged.write_bytes(dumps(payload).encode())
        # Atomic within one file system: a reader sees the whole message or
        # nothing.
        os.rename(staged, Path(self.data_folder_out) / name)

    # -- consuming ----------------------------------------------------------

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def drain_events(self, timeout=None, callback=None):
        # Nothing to look at counts as finding nothing, unless it is because
        # this channel holds its prefetch: a slot frees as soon as a task
        # ends. _get_many clears it when it delivers.
        self.found_nothing = not (self._consumers and not self.qos.can_consume())
        return super().drain_events(timeout=timeout, callback=callback)

    def _get_many(self, queues, timeout=None):
        """Deliver one message: the queues take turns, and within a queue the
        highest priority, oldest first."""
        self._orphans_requeue_due()
        waiting = self.connection.waiting(self.queue_folder)
        turns = [queue for queue in dict.fromkeys(queues) if waiting.get(queue)]
        if turns:
            start = self._round_robin % len(turns)
            for queue in turns[start:] + turns[:start]:
                payload = self._claim_first(waiting[queue])
                if payload is not None:
                    self.found_nothing = False
                    self._round_robin = turns.index(queue) + 1
                    tag = payload["properties"]["delivery_tag"]
                    try:
                        self.connection._deliver(payload, queue)
                    finally:
                        if queue in self._no_ack_queues:
                            self._release(tag)
                    return
        raise Empty()

    def _get(self, queue):
        """basic_get: the next message of one queue, claimed."""
        payload = self._claim_first(self.connection.waiting(self.queue_folder, fresh=True).get(queue, []))
        if payload is None:
            raise Empty()
        return payload

    def _claim_first(self, names: list[str]) -> dict | None:
        """Claim the first of `names` (sorted last first) that no other
        consumer took first, removing from `names` each one tried; its
        payload, or None."""
        folder = ClaimFolder.of_this_process(self.claim_root)
        while names:
            name = names.pop()
            claimed = folder.path / name
            try:
                os.rename(self.queue_folder / name, claimed)
            except FileNotFoundError:
                continue  # another consumer took it
            try:
                payload = loads(claimed.read_bytes())
            except ValueError:
                logger.warning("Moved aside an unreadable message file: %s", claimed.name)
                os.rename(claimed, self.claim_root / f".unreadable-{name}")
                continue
            self._claims[payload["properties"]["delivery_tag"]] = claimed
            return payload
        return None

    def basic_get(self, queue, no_ack=False, **kwargs):
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self._release(message.delivery_tag)
        return message

    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple=multiple)
        self._release(delivery_tag)

    def basic_reject(self, delivery_tag, requeue=False):
        # With requeue, kombu calls _restore_at_beginning, which takes the
        # claim back first.
        super().basic_reject(delivery_tag, requeue=requeue)
        self._release(delivery_tag)

    def _restore(self, message):
        """Back to the queue (a reject with requeue, or what a closing
        channel still held): the claimed file, under its own name."""
        claimed = self._claims.pop(message.delivery_tag, None)
        if claimed is None:
            return super()._restore(message)
        _requeue(claimed, self.queue_folder, self.staging_folder)

    def _release(self, delivery_tag) -> None:
        claimed = self._claims.pop(delivery_tag, None)
        if claimed is not None:
            claimed.unlink(missing_ok=True)

    # -- messages of processes that died ------------------------------------

    def _orphans_requeue_due(self) -> None:
        now = time.monotonic()
        if now - self._orphans_checked_at >= ORPHAN_CHECK_SECONDS:
            self._orphans_checked_at = now
            orphans_requeue(self.claim_root, self.queue_folder, self.staging_folder)


def orphans_requeue(claim_root: Path, queue_folder: Path, staging_folder: Path) -> int:
    """Put back in the queue every message claimed by a process that no
    longer holds its claim folder's lock (it died); the number put back."""
    if not claim_root.is_dir():
        return 0
    # Never a folder named for this process, whether or not it is in
    # ClaimFolder's registry: POSIX locks belong to the process, so its lockf
    # on its own folder's lock succeeds, and it would take back its own
    # claims and remove the folder under itself (seen in Flower: "Directory
    # not empty" from an inspect call).
    own_prefix = ClaimFolder.prefix_of_this_process()
    requeued = 0
    for folder in claim_root.iterdir():
        if folder.name.startswith((".", own_prefix)) or not folder.is_dir():
            continue
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR)
        except FileNotFoundError:
            continue  # another consumer is emptying it
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its owner lives
            for claimed in folder.glob(f"*{SUFFIX}"):
                _requeue(claimed, queue_folder, staging_folder)
                requeued += 1
            # Another consumer may have emptied it between our open and lock.
            (folder / LOCK_NAME).unlink(missing_ok=True)
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)
    if requeued:
        logger.warning("Requeued %d message(s) held by a consumer that died.", requeued)
    return requeued


class Transport(filesystem.Transport):
    Channel = Channel
    polling_interval = MAX_POLL_SECONDS
    # No host: kombu would otherwise warn "No hostname was supplied" on every
    # connection (29 times as `make run` starts).
    default_connection_params = {"port": 0}

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        # Queue folder -> (when it was listed, queue -> its message names,
        # sorted last first so the next one pops off the end).
        self._listings: dict[Path, tuple[float, dict[str, list[str]]]] = {}

    def waiting(self, folder: Path, *, fresh: bool = False) -> dict[str, list[str]]:
        """The messages waiting in `folder` by queue, from a listing at most
        LISTING_SECONDS old (or a new one); callers pop what they take."""
        now = time.monotonic()
        taken_at, by_queue = self._listings.get(folder, (-LISTING_SECONDS, {}))
        if fresh or now - taken_at >= LISTING_SECONDS:
            by_queue = defaultdict(list)
            for name in os.listdir(folder):
                if name.endswith(SUFFIX):
                    by_queue[queue_of(name)].append(name)
            for names in by_queue.values():
                names.sort(reverse=True)
            self._listings[folder] = (now, by_queue)
        return by_queue

    def drain_events(self, connection, timeout=None):
        """kombu's loop, with a wait between empty looks that depends on why
        they were empty (see MIN_POLL_SECONDS)."""
        started = time.monotonic()
        wait = MIN_POLL_SECONDS
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise TimeoutError() from None
                idle = all(getattr(channel, "found_nothing", True) for channel in self.channels)
                wait = min(wait * 2, self.polling_interval) if idle else MIN_POLL_SECONDS
                time.sleep(wait)


def embedded_broker_in_use() -> bool:
    """Whether this process's broker is the embedded filesystem one (the
    default of `make run`, config/settings/base.py)."""
    return settings.CELERY_BROKER_URL.startswith("filesystem://")


def broker_tables_prepare() -> None:
    """Make the filesystem broker's exchange tables ready for the programs
    `up` is about to start, which bind their queues afresh.

    The kit's own exchange keeps its valid table: its queues are durable.
    Events, remote control and replies go to queues that live as long as
    their consumer (Flower's events, a worker's mailbox), which a filesystem
    cannot tell are gone: left bound, every later event would be written for
    a Flower that stopped, run after run, and nothing would read it. Their
    tables are emptied and the messages waiting for those queues deleted.
    A corrupt table is emptied too: kombu creates a table on the first bind
    by opening it truncated before it takes the lock, so two processes
    starting together could interleave their writes and leave invalid JSON
    that fails every later control command.
    """
    if not embedded_broker_in_use():
        return
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    control = Path(options["control_folder"])
    mailbox = current_app.control.mailbox
    durable = {queue.exchange.name for queue in current_app.conf.task_queues}
    transient = {current_app.conf.event_exchange, mailbox.exchange.name, mailbox.reply_exchange.name} - durable
    for name in durable | transient:
        table = control / f"{name}.exchange"
        try:
            json.loads(table.read_text())
        except (FileNotFoundError, ValueError):
            table.write_text("[]")
        else:
            if name in transient:
                table.write_text("[]")
    task_queues = {queue.name for queue in current_app.conf.task_queues}
    folder = Path(options.get("data_folder_in", ""))
    if folder.is_dir():
        for message in folder.glob(f"*{SUFFIX}"):
            if queue_of(message.name) not in task_queues:
                message.unlink(missing_ok=True)
