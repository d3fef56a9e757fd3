"""django-celery-results' database backend ("django-db"), tuned for the kit.

Two changes, both about cost (DESIGN.md, invariant 6):
- the TaskResult row is written with one INSERT ... ON CONFLICT UPDATE instead
  of the stock update_or_create (a locking SELECT, then a write);
- the Job row moves to the same state in the same transaction, so every path
  that ends a task (success and failure in the child, hard time limits and
  lost workers in the main process, revokes) updates the Job exactly once;
- that transaction does not wait for the disk (see tracking_transaction).
"""

from celery import states
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend

from jobs.tracking import job_record_outcome, tracking_transaction

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
        with tracking_transaction(using):
            self.TaskModel._default_manager.using(using).bulk_create(
                [row],
                update_conflicts=True,
                unique_fields=["task_id"],
                update_fields=update_fields,
            )
            job_record_outcome(job_id=task_id, celery_state=status, result=result, using=using)
        return result
