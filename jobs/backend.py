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

from celery import states
from django.db import InterfaceError, OperationalError, connections, router, transaction
from django.db.models.constants import OnConflict
from django.db.models.sql import InsertQuery
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend

from jobs.models import Job
from jobs.tracking import is_job_id, job_outcome_values, job_update_sql, run_tracking_statement

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

    def _store_result(self, task_id, result, status, traceback=None, request=None, using=None):
        content_type, content_encoding, encoded_result = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        fields = {
            "task_id": task_id,
            "status": status,
            "result": encoded_result,
            "meta": encoded_meta,
            "content_encoding": content_encoding,
            "content_type": content_type,
            **self._get_extended_properties(request, traceback),
        }
        # Not every code path passes extended properties; keep the traceback.
        fields["traceback"] = traceback
        update_fields = list(_UPDATED_ON_CONFLICT)
        if status == states.STARTED:
            fields["date_started"] = timezone.now()
            update_fields.append("date_started")
        row = self.TaskModel(**fields)
        job_values = job_outcome_values(celery_state=status, result=result) if is_job_id(task_id) else None
        using = using or router.db_for_write(self.TaskModel)
        if job_values is not None and connections[using].vendor != "postgresql":
            # No data-modifying WITH (SQLite): two statements, one transaction.
            with transaction.atomic(using=using):
                self.TaskModel._default_manager.using(using).bulk_create(
                    [row], update_conflicts=True, unique_fields=["task_id"], update_fields=update_fields
                )
                Job.objects.using(using).filter(pk=task_id).update(**job_values)
            return result

        def build(connection):
            upsert_sql, upsert_params = self._upsert_sql(connection, row, update_fields)
            if job_values is None:
                return upsert_sql, upsert_params
            update_sql, update_params = job_update_sql(connection, job_id=task_id, values=job_values)
            return f"WITH job AS ({update_sql}) {upsert_sql}", [*update_params, *upsert_params]

        run_tracking_statement(build, using=using)
        return result

    def _upsert_sql(self, connection, row, update_fields: list[str]) -> tuple[str, list]:
        """INSERT ... ON CONFLICT (task_id) DO UPDATE of one TaskResult, as
        bulk_create(update_conflicts=True) would write it, without running it."""
        opts = self.TaskModel._meta
        query = InsertQuery(
            self.TaskModel,
            on_conflict=OnConflict.UPDATE,
            update_fields=[opts.get_field(name) for name in update_fields],
            unique_fields=[opts.get_field("task_id")],
        )
        query.insert_values([field for field in opts.concrete_fields if not field.primary_key], [row])
        [(sql, params)] = query.get_compiler(connection=connection).as_sql()
        return sql, list(params)
