"""django-celery-results' database backend ("django-db"), tuned for the kit.

What changes, all about cost (DESIGN.md, invariant 6):
- the TaskResult row is written with one INSERT ... ON CONFLICT UPDATE instead
  of the stock update_or_create (a locking SELECT, then a write);
- the Job row moves to the same state in the same statement (PostgreSQL: a
  data-modifying WITH) or transaction (elsewhere), so every path that ends a
  task (success and failure in the child, hard time limits and lost workers
  in the main process, revokes) updates the Job exactly once;
- on PostgreSQL that one statement is one round trip, and its commit does
  not wait for the disk (jobs.tracking.relaxed_durability).
"""

import functools

from celery import states
from django.db import InterfaceError, OperationalError, connections, router, transaction
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend

from jobs import end_batches
from jobs.end_batches import End
from jobs.models import Job
from jobs.starts import give_back_deferred_start, take_deferred_start
from jobs.tracking import (
    cached_statement,
    is_job_id,
    job_outcome_values,
    job_successes_sql,
    job_update_sql,
    run_tracking_statement,
    task_result_upsert_sql,
)
from upstream.celery_results import extended_properties, request_meta

_UPDATED_ON_CONFLICT = [
    "status",
    "result",
    "traceback",
    "meta",
    "content_encoding",
    "content_type",
    "periodic_task_name",
    "task_name",
    "task_args",
    "task_kwargs",
    "worker",
    "date_done",
]


class TrackedDatabaseBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc) -> bool:
        # With CELERY_RESULT_BACKEND_ALWAYS_RETRY, Celery writes the state
        # again after a backoff when this is true: a database that restarts
        # while a task runs costs its result nothing. (The stock backend
        # retries InterfaceError only; a refused or dropped connection is an
        # OperationalError.) run_tracking_statement has already closed the
        # broken connection, so the next attempt opens a new one.
        return isinstance(exc, (InterfaceError, OperationalError))

    # _store_result is Celery's hook for a backend's write (BaseBackend.store_result
    # calls it); the stock DatabaseBackend implements it too.
    def _store_result(self, task_id, result, status, traceback=None, request=None, using=None):
        content_type, content_encoding, encoded_result = self.encode_content(result)
        meta = {
            **request_meta(self, request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        now = timezone.now()
        values = {
            **extended_properties(self, request, traceback),
            "task_id": task_id,
            "status": status,
            "result": encoded_result,
            "meta": encoded_meta,
            "content_encoding": content_encoding,
            "content_type": content_type,
            # Not every code path passes extended properties; keep the traceback.
            "traceback": traceback,
            "date_created": now,  # kept from the first write (not in _UPDATED_ON_CONFLICT)
            "date_done": now,
            "date_started": now if status == states.STARTED else None,
        }
        update_fields = [*_UPDATED_ON_CONFLICT, "date_started"] if status == states.STARTED else _UPDATED_ON_CONFLICT
        job_values = job_outcome_values(celery_state=status, result=result) if is_job_id(task_id) else None
        # The job's start, if its worker child deferred it to this statement.
        start = take_deferred_start(task_id) if job_values is not None else None
        if start is not None and status == states.SUCCESS and self._acked_late(request):
            end = End(
                job_id=task_id,
                started_at=start.started_at,
                finished_at=job_values["finished_at"],
                worker=start.worker,
                task_result=[values[name] for name in self._column_names()],
            )
            if end_batches.offer(end):
                # The worker's main process writes it with others, then
                # acknowledges the message.
                return result
        using = using or router.db_for_write(self.TaskModel)
        if connections[using].vendor != "postgresql":
            # No data-modifying WITH (SQLite): two statements, one transaction.
            with transaction.atomic(using=using):
                self.TaskModel._default_manager.using(using).bulk_create(
                    [self.TaskModel(**values)],
                    update_conflicts=True,
                    unique_fields=["task_id"],
                    update_fields=update_fields,
                )
                if job_values is not None:
                    Job.objects.using(using).filter(pk=task_id).update(**job_values)
            return result

        def build(connection):
            upsert_sql = cached_statement(
                connection,
                ("task_result_upsert", *update_fields),
                lambda c: task_result_upsert_sql(c, self.TaskModel, self._column_names(), update_fields),
            )
            # A column a later django-celery-results adds is a KeyError here,
            # not a silent NULL.
            upsert_params = [values[name] for name in self._column_names()]
            if job_values is None:
                return upsert_sql, upsert_params
            update_sql, update_params = job_update_sql(connection, job_id=task_id, values=job_values, start=start)
            return f"WITH job AS ({update_sql}) {upsert_sql}", [*update_params, *upsert_params]

        try:
            run_tracking_statement(build, using=using)
        except Exception:
            if start is not None:
                # Not written: the next attempt (Celery retries the store)
                # or the task's end (jobs.starts.task_ended) still has it.
                give_back_deferred_start(start)
            raise
        return result

    def _acked_late(self, request) -> bool:
        # The main process holds an acknowledgement until the end is written:
        # a task acknowledged as it starts has none left to hold.
        task = self.app.tasks.get(getattr(request, "task", None) or "")
        return bool(task is not None and task.acks_late)

    @classmethod
    def successes_statement(cls, connection, ends: list[End]) -> tuple[str, list]:
        """The ends of jobs that succeeded, their Job rows and TaskResults in
        one statement (PostgreSQL), as (sql, params): the worker's main
        process sends it (jobs.end_batches, jobs.loop_statement)."""
        update_sql, update_params = job_successes_sql(connection, ends)
        upsert_sql = cached_statement(
            connection,
            ("task_results_upsert", *_UPDATED_ON_CONFLICT),
            lambda c: task_result_upsert_sql(c, cls.TaskModel, cls._column_names(), _UPDATED_ON_CONFLICT, arrays=True),
        )
        # One list per column, its values row by row (unnest).
        upsert_params = [list(column) for column in zip(*(end.task_result for end in ends), strict=True)]
        return f"WITH job AS ({update_sql}) {upsert_sql}", [*update_params, *upsert_params]

    @classmethod
    @functools.cache
    def _column_names(cls) -> list[str]:
        """Every field of TaskResult but its id, in the order of the INSERT."""
        return [field.name for field in cls.TaskModel._meta.concrete_fields if not field.primary_key]
