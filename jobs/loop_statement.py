"""One statement at a time, sent from the worker's event loop without waiting
for PostgreSQL's answer.

The worker's main process writes the ends of several jobs in one statement
(jobs.end_batches). Waited for, that statement stopped its event loop for
the whole round trip, about a millisecond a batch, while PostgreSQL ran it
(and, with JOBS_DURABLE_TRACKING, flushed it to disk): a third of the main
process's time at a thousand jobs a second, in which it neither handed
messages to its children nor took new ones. Here the statement is sent, the
loop goes on, and the answer is read when the connection's socket becomes
readable; a callback then gets the outcome.

The connection is the main process's own (a Django connection object not
shared with anything else, set up by Django as any other), in autocommit:
each statement is its own transaction. Each statement shape is prepared
once per connection, as psycopg does for the children's statements.
"""

from __future__ import annotations

import select
from collections.abc import Callable

import psycopg
from django.db import DatabaseError, OperationalError, connections
from psycopg import pq

from upstream.psycopg import libpq_query

# How long a wait for the answer blocks at a time before it looks again
# whether the connection is still there.
_WAIT_SECONDS = 1.0


class LoopStatement:
    """Runs one statement at a time on a connection of its own to `alias`."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.wrapper = None
        self.hub = None
        self.socket = None
        self.on_done: Callable[[DatabaseError | None], None] | None = None
        self.prepared: dict[tuple, bytes] = {}

    @property
    def busy(self) -> bool:
        """A statement is in flight."""
        return self.on_done is not None

    def send(self, sql: str, params: list, on_done: Callable[[DatabaseError | None], None], *, hub=None) -> None:
        """Send `sql` and return at once; `on_done(None)` once it is
        committed, `on_done(error)` if it failed, called from `hub`'s loop
        (or from wait()). A failure to send at all is raised instead."""
        if self.busy:
            raise RuntimeError("a statement is already in flight")
        for attempt in (1, 2):
            if self.wrapper is not None and _spoke_while_idle(self.wrapper.connection.pgconn):
                # Unprompted words on an idle connection in autocommit are the
                # server's last (a restart, a failover) or a rare notice:
                # replaced either way, before anything is sent on it.
                self.close()
            fresh = self.wrapper is None
            try:
                pgconn = self._connected()
                query, values, types, formats = libpq_query(self.wrapper.connection, sql, params)
                # Blocking mode: the statement is all sent when this returns
                # (a few kilobytes); only the answer is not waited for.
                pgconn.send_query_prepared(self._prepared(pgconn, query, types), values, formats)
                break
            except psycopg.Error as exc:
                # Once more on a new connection, unless this one was new.
                self.close()
                if fresh or attempt == 2:
                    raise OperationalError(str(exc)) from exc
        self.on_done = on_done
        self.follow(hub)

    def follow(self, hub) -> None:
        """Read answers from `hub`'s loop. Again after each send: a loop that
        lost its broker connection is reset, and forgets its readers."""
        if hub is None or self.wrapper is None:
            return
        socket = self.wrapper.connection.pgconn.socket
        if hub.readers.get(socket, (None,))[0] != self._on_readable:
            hub.add_reader(socket, self._on_readable)
        self.hub, self.socket = hub, socket

    def wait(self) -> None:
        """Block until the statement in flight, if any, is answered."""
        while self.busy:
            try:
                socket = self.wrapper.connection.pgconn.socket
            except psycopg.Error:
                socket = None  # lost: _on_readable finds out and says so
            if socket is not None:
                select.select([socket], [], [], _WAIT_SECONDS)
            self._on_readable()

    def close(self) -> None:
        wrapper, self.wrapper = self.wrapper, None
        self.prepared = {}
        if self.hub is not None and self.socket is not None:
            # Before the socket closes, while its number is still this
            # connection's.
            self.hub.remove_reader(self.socket)
        self.hub = self.socket = None
        if wrapper is not None:
            try:
                wrapper.close()
            except DatabaseError:
                pass

    def _connected(self) -> pq.abc.PGconn:
        if self.wrapper is None:
            wrapper = connections.create_connection(self.alias)
            try:
                wrapper.connect()
            except DatabaseError:
                wrapper.close()
                raise
            self.wrapper = wrapper
        return self.wrapper.connection.pgconn

    def _prepared(self, pgconn, query: bytes, types: list) -> bytes:
        """The name of `query` prepared for these parameter types (a batch
        whose column is all NULL has other types). Preparing waits for the
        server: once per shape and connection."""
        key = (query, tuple(types))
        if (name := self.prepared.get(key)) is None:
            name = f"kit_loop_{len(self.prepared)}".encode()
            result = pgconn.prepare(name, query, types)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise DatabaseError(_message(result))
            self.prepared[key] = name
        return name

    def _on_readable(self) -> None:
        wrapper = self.wrapper
        if wrapper is None:
            return
        pgconn = wrapper.connection.pgconn
        error = None
        try:
            pgconn.consume_input()
            if pgconn.is_busy():
                return
            while (result := pgconn.get_result()) is not None:
                if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                    error = DatabaseError(_message(result))
        except psycopg.Error as exc:
            error = OperationalError(str(exc))
        if pgconn.status != pq.ConnStatus.OK:
            # The server went away (a restart, a failover): the next
            # statement opens a new connection.
            error = OperationalError(str(error or "the connection to the database was lost"))
            self.close()
        if self.on_done is not None:
            on_done, self.on_done = self.on_done, None
            on_done(error)


def _spoke_while_idle(pgconn) -> bool:
    """Whether the server sent anything on this idle connection (its socket
    is readable), or the socket is gone. Reading it would not do: the
    server's last message can come a moment before the end of the socket."""
    try:
        return bool(select.select([pgconn.socket], [], [], 0)[0])
    except psycopg.Error:
        return True


def _message(result) -> str:
    return (result.error_message or b"").decode(errors="replace").strip() or f"status {result.status.name}"
