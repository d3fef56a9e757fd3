"""The no-op job, once per peer: each system's own way to declare a task.

Procrastinate finds `procrastinate_noop` here (its Django integration
imports every installed app's tasks module); django-tasks runs
`django_tasks_noop`. django-q2 and RQ are given the dotted path of
bench/peers_app/noop.py; Dramatiq's actor is in
bench/peers_app/dramatiq_actors.py (it needs its broker set first)."""

from django_tasks import task
from procrastinate.contrib.django import app


@app.task(name="bench_noop")
def procrastinate_noop() -> None:
    """Does nothing (Procrastinate)."""


@task()
def django_tasks_noop() -> None:
    """Does nothing (django-tasks)."""
