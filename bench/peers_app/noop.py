"""The no-op job as a plain function, for the peers that take a dotted path
(django-q2, RQ). A module of its own, importing nothing: RQ forks a child per
job, and a child imports the function again unless its parent already did."""


def noop() -> None:
    """Does nothing."""
