"""django-celery-results: the database backend's request helpers.

Written against django-celery-results 2.6.0. The kit's result backend
(jobs/backend.py) writes TaskResult with its own statement instead of the
stock update_or_create, and needs the same column values the stock backend
derives from Celery's request. DatabaseBackend has no public form of these
two helpers; they are called here only.
"""

from upstream import UpstreamChanged

WRITTEN_AGAINST = "2.6.0"
# What _get_extended_properties returns (TaskResult columns), with
# result_extended on.
EXTENDED_PROPERTIES = {"task_name", "task_args", "task_kwargs", "periodic_task_name", "worker", "traceback"}


def request_meta(backend, request) -> dict:
    """The `meta` Celery's request carries (group ids and the like)."""
    helper = getattr(backend, "_get_meta_from_request", None)
    if helper is None:
        raise UpstreamChanged(
            "django-celery-results", WRITTEN_AGAINST, "DatabaseBackend._get_meta_from_request is gone"
        )
    return helper(request)


def extended_properties(backend, request, traceback) -> dict:
    """TaskResult's task_name, task_args, task_kwargs, worker, ... for `request`."""
    helper = getattr(backend, "_get_extended_properties", None)
    if helper is None:
        raise UpstreamChanged(
            "django-celery-results", WRITTEN_AGAINST, "DatabaseBackend._get_extended_properties is gone"
        )
    values = helper(request, traceback)
    unknown = set(values) - EXTENDED_PROPERTIES
    if unknown:
        # A new column the kit's upsert would not write: fail, do not drop it.
        raise UpstreamChanged(
            "django-celery-results", WRITTEN_AGAINST, f"_get_extended_properties returns new keys {sorted(unknown)}"
        )
    return values
