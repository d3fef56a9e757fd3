"""Errors a task raises to say how its job should end."""


class BadInput(Exception):
    """The job's input is wrong (corrupt file, bad address, bad parameter).

    The job fails at once with this message, and is never retried: running it
    again would fail the same way. Say what is wrong in words a person can act
    on: "image too large: 20000x20000 exceeds the 89 megapixel limit".
    """


class TransientError(Exception):
    """Something outside the job failed and may work later (a timeout, a
    service briefly down). Retried with backoff when a task declares it."""


class UnknownTask(LookupError):
    """No job task of that name is registered."""


class UnsupportedOption(ValueError):
    """A Celery option (apply_async, beat, a canvas) the kit cannot honour
    for a tracked job: refused, never silently dropped."""
