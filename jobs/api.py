"""The JSON API: enqueue a registered task (202 Accepted) and follow it.

Authentication is a staff session (the admin's login) or a token
(`Authorization: Token <key>`, see `manage.py drf_create_token`). Enqueueing
needs jobs.add_job; a user reads their own jobs, and anyone's with
jobs.view_job. Nobody anonymous gets anything.
"""

import functools
import inspect
import json
import uuid

from django.db import transaction
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import explain, failures, services
from jobs.exceptions import BadInput, UnknownTask
from jobs.keys import owner_scoped_key
from jobs.models import CANCELLABLE_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from jobs.queues import Priority, Queue
from jobs.registry import get_job_task, job_tasks, public_job_tasks
from jobs.search import jobs_search
from jobs.storable import unstorable_reason

MAX_COUNTDOWN_SECONDS = 7 * 24 * 3600
LIST_LIMIT = 100
# Jobs per bulk request (the body limit, DATA_UPLOAD_MAX_MEMORY_SIZE, also
# applies).
BULK_LIMIT = 10_000


def _check_task_and_arguments(task_name: str, calls: list[tuple[list, dict]], *, field: str = "args") -> None:
    """Refuse an unknown task, or arguments it cannot take, here with a 400,
    rather than as failed jobs later."""
    try:
        # One lookup: the sorted catalogue of every task is built only for
        # the error.
        task = get_job_task(task_name)
    except UnknownTask:
        task = None
    if task is None or not task.public:
        tasks = public_job_tasks()
        raise ValidationError({"task": f"Unknown task {task_name!r}. Available: {', '.join(tasks) or 'none'}."})
    signature = _signature(task.run)
    for index, (args, kwargs) in enumerate(calls):
        where = f"{field}[{index}]: " if field == "calls" else ""
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ValidationError({field: f"{where}{task_name}: {exc}"}) from None
        if task.argument_check is not None:
            try:
                task.argument_check(*args, **kwargs)
            except BadInput as exc:
                raise ValidationError({field: f"{where}{task_name}: {exc}"}) from None


@functools.cache
def _signature(function) -> inspect.Signature:
    # A task's run() does not change once registered; inspecting it took a
    # fifth of this check.
    return inspect.signature(function)


def _choice_errors(choices) -> dict:
    """A choice field's error that lists what it accepts."""
    return {"invalid_choice": f'"{{input}}" is not a valid choice. Valid: {", ".join(choices)}.'}


PRIORITIES = [p.value for p in Priority]


class EnqueueRequest(serializers.Serializer):
    task = serializers.CharField(max_length=200)
    args = serializers.ListField(required=False, default=list)
    kwargs = serializers.DictField(required=False, default=dict)
    priority = serializers.ChoiceField(
        choices=PRIORITIES, default=Priority.MEDIUM.value, error_messages=_choice_errors(PRIORITIES)
    )
    countdown = serializers.FloatField(required=False, min_value=0, max_value=MAX_COUNTDOWN_SECONDS)
    unique_key = serializers.CharField(required=False, max_length=200)

    def validate(self, data):
        _check_task_and_arguments(data["task"], [(data["args"], data["kwargs"])])
        return data


class Call(serializers.Serializer):
    args = serializers.ListField(required=False, default=list)
    kwargs = serializers.DictField(required=False, default=dict)


class BulkEnqueueRequest(serializers.Serializer):
    task = serializers.CharField(max_length=200)
    calls = serializers.ListField(child=Call(), min_length=1, max_length=BULK_LIMIT)
    priority = serializers.ChoiceField(
        choices=PRIORITIES, default=Priority.MEDIUM.value, error_messages=_choice_errors(PRIORITIES)
    )

    def validate(self, data):
        calls = [(call["args"], call["kwargs"]) for call in data["calls"]]
        _check_task_and_arguments(data["task"], calls, field="calls")
        return data


def job_representation(job: Job, request: Request, *, with_result: bool = True) -> dict:
    # The result lives in TaskResult: one more query, so lists leave it out.
    result_row = job.task_result if with_result and job.is_finished else None
    body = {
        "id": str(job.id),
        "url": request.build_absolute_uri(reverse("jobs:job-detail", args=[job.id])),
        "task": job.task_name,
        "status": job.status,
        "queue": job.queue,
        "priority": job.priority,
        "progress": {"percent": job.progress, "message": job.progress_message},
        "attempts": job.attempts,
        "created_at": job.created_at,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "runtime_seconds": job.runtime.total_seconds() if job.runtime else None,
        "result": None,
        "error": job.error or None,
        "retry_of": str(job.retry_of_id) if job.retry_of_id else None,
    }
    if with_result:
        # Why it has not finished yet, in one sentence (jobs.explain); None
        # once it has. Left out of lists: it asks the broker and the database.
        body["explanation"] = explain.job_explain(job)
    if result_row is not None and job.status == JobStatus.SUCCESS:
        body["result"] = result_row.result and _decode(result_row.result)
    if result_row is not None and result_row.traceback and request.user.is_staff:
        body["traceback"] = result_row.traceback
    return body


def _decode(stored: str):
    try:
        return json.loads(stored)
    except ValueError:
        return stored


def _visible_jobs(request: Request) -> QuerySet[Job]:
    jobs = Job.objects.all()
    if not request.user.has_perm("jobs.view_job"):
        jobs = jobs.filter(requested_by=request.user)
    return jobs


def _require_add_permission(request: Request) -> None:
    if not request.user.has_perm("jobs.add_job"):
        raise PermissionDenied("Enqueueing jobs needs the jobs.add_job permission.")


JOB = OpenApiTypes.OBJECT  # job_representation's shape


def _filter_parameter(name: str, description: str, type_=str) -> OpenApiParameter:
    return OpenApiParameter(name, type_, OpenApiParameter.QUERY, description=description)


class JobCollection(APIView):
    @extend_schema(
        operation_id="jobs_enqueue",
        request=EnqueueRequest,
        responses={202: JOB, 200: JOB},
        description="Enqueue a registered public task (202). With a unique_key held by an active job, that job "
        "is answered instead (200, deduplicated: true).",
    )
    def post(self, request: Request) -> Response:
        _require_add_permission(request)
        payload = EnqueueRequest(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        key = data.get("unique_key")
        # Scoped to the caller: never another user's job, never a key the kit
        # uses itself (jobs/keys.py).
        scoped_key = owner_scoped_key(key, request.user)
        try:
            # deduplicated: an active job already held the key, and is the
            # answer (no new one was made).
            job, deduplicated = services.job_enqueue_or_find(
                task_name=data["task"],
                args=data["args"],
                kwargs=data["kwargs"],
                priority=data["priority"],
                countdown=data.get("countdown"),
                unique_key=scoped_key,
                requested_by=request.user,
            )
        except BadInput as exc:
            raise ValidationError({"detail": str(exc)}) from None
        body = job_representation(job, request)
        if deduplicated:
            body["deduplicated"] = True
            body["detail"] = f"A job with unique_key {key!r} is already active: this is that job, no new one was made."
            return Response(body, status=status.HTTP_200_OK, headers={"Location": body["url"]})
        body["deduplicated"] = False
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(
        operation_id="jobs_list",
        parameters=[
            _filter_parameter("status", "One of the job statuses.", str),
            _filter_parameter("task", "A registered task name."),
            _filter_parameter("queue", "A queue name."),
            _filter_parameter("created_after", "ISO 8601 time with a zone.", OpenApiTypes.DATETIME),
            _filter_parameter("created_before", "ISO 8601 time with a zone.", OpenApiTypes.DATETIME),
            _filter_parameter("q", "A word of the task name, error or arguments, or an id prefix."),
            _filter_parameter("cursor", "The page, from a previous answer's next or previous link."),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        """Jobs, newest first, a page at a time (`next` is the following
        page's URL). Filters: status, task, queue, created_after,
        created_before (ISO 8601), q (a word of the task name, error or
        arguments, or the first characters of the id)."""
        jobs = _filtered_jobs(_visible_jobs(request), request.query_params)
        paginator = JobCursor()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return paginator.get_paginated_response([job_representation(job, request, with_result=False) for job in page])


class JobCursor(CursorPagination):
    """Cursor pages: stable while new jobs arrive, and no OFFSET over a
    million rows."""

    page_size = LIST_LIMIT
    ordering = "-created_at"


LIST_FILTERS = ("status", "task", "queue", "created_after", "created_before", "q", "cursor")


def _filtered_jobs(jobs: QuerySet, params) -> QuerySet:
    """`jobs` narrowed by the list's query parameters; a 400 naming any
    parameter or value it does not know."""
    unknown = sorted(set(params) - set(LIST_FILTERS))
    if unknown:
        raise ValidationError(
            {name: f"Unknown filter {name!r}. Filters: {', '.join(LIST_FILTERS)}." for name in unknown}
        )
    # A NUL would reach PostgreSQL in the search and fail there (a 500).
    errors = {
        name: f"{name} {found[1]}." for name in params if (found := unstorable_reason(params.getlist(name), name))
    }
    if errors:
        raise ValidationError(errors)
    choices = {"status": JobStatus.values, "task": list(job_tasks()), "queue": [q.value for q in Queue]}
    fields = {"status": "status", "task": "task_name", "queue": "queue"}
    for name, valid in choices.items():
        if (value := params.get(name)) is None:
            continue
        if value not in valid:
            errors[name] = f"Unknown {name} {value!r}. One of: {', '.join(valid)}."
        else:
            jobs = jobs.filter(**{fields[name]: value})
    for name, lookup in (("created_after", "created_at__gte"), ("created_before", "created_at__lt")):
        if (value := params.get(name)) is None:
            continue
        try:
            moment = parse_datetime(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            errors[name] = f"{value!r} is not an ISO 8601 time with a zone, like 2026-12-06T05:00:00Z."
        else:
            jobs = jobs.filter(**{lookup: moment})
    if errors:
        raise ValidationError(errors)
    if params.get("q"):
        jobs = jobs_search(jobs, params["q"])
    return jobs


class JobBulk(APIView):
    """Many jobs of one task from one request: {"task": ..., "calls":
    [{"args": [...], "kwargs": {...}}, ...], "priority": ...}. All or none:
    one bad call refuses the request. Answers 202 with the jobs' ids."""

    @extend_schema(operation_id="jobs_enqueue_bulk", request=BulkEnqueueRequest, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        _require_add_permission(request)
        payload = BulkEnqueueRequest(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            jobs = services.job_enqueue_many(
                task_name=data["task"],
                calls=[(call["args"], call["kwargs"]) for call in data["calls"]],
                priority=data["priority"],
                requested_by=request.user,
            )
        except BadInput as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return Response(
            {"task": data["task"], "count": len(jobs), "ids": [str(job.id) for job in jobs]},
            status=status.HTTP_202_ACCEPTED,
        )


def _job_or_404(request: Request, job_id: str) -> Job:
    """The job, if this user may see it; a JSON 404 otherwise, also for an
    id that is not a UUID at all."""
    try:
        job_id = uuid.UUID(str(job_id))
    except ValueError:
        raise NotFound(f"No such job: {str(job_id)[:100]!r} is not a job id (a UUID).") from None
    job = Job.objects.filter(pk=job_id).first()
    # Ownership first: following one's own job, what a client polls for,
    # costs no permission queries (two of a GET's five before).
    own = job is not None and request.user.is_authenticated and job.requested_by_id == request.user.pk
    if job is None or not (own or request.user.has_perm("jobs.view_job")):
        # 404, not 403, for someone else's job: ids are not to be probed.
        raise NotFound("No such job.")
    return job


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class JobDetail(APIView):
    @extend_schema(operation_id="jobs_detail", responses={200: JOB})
    def get(self, request: Request, job_id) -> Response:
        return Response(job_representation(_job_or_404(request, job_id), request))


class JobRetry(APIView):
    """Retry a job that ended badly, as the admin's Retry button does: the
    jobs.retry_job permission; a job that was retried already stands for its
    latest attempt. 202 with the new job; 409 if there is nothing to retry."""

    @extend_schema(operation_id="jobs_retry", request=None, responses={202: JOB, 409: OpenApiTypes.OBJECT})
    def post(self, request: Request, job_id) -> Response:
        job = _job_or_404(request, job_id)
        if not request.user.has_perm("jobs.retry_job"):
            raise PermissionDenied("Retrying jobs needs the jobs.retry_job permission.")
        latest = failures.latest_attempt(job)
        which = f"Its latest attempt {latest.pk}" if latest.pk != job.pk else f"Job {job.pk}"
        if latest.status not in RETRYABLE_STATUSES:
            raise Conflict(f"{which} is {latest.status}; only failed, cancelled, dead or lost jobs can be retried.")
        if latest.task_name not in job_tasks():
            raise Conflict(f"{which} cannot be retried: its task {latest.task_name} no longer exists.")
        with transaction.atomic():
            retry = services.job_retry(job=latest, requested_by=request.user)
            _log_admin_change(request, latest, f"Retried as job {retry.pk} (API).")
        body = job_representation(retry, request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class JobCancel(APIView):
    """Cancel a job that has not finished, as the admin's Cancel does: the
    jobs.cancel_job permission; a running job is killed. 200 with the job;
    409 if it had already finished."""

    @extend_schema(operation_id="jobs_cancel", request=None, responses={200: JOB, 409: OpenApiTypes.OBJECT})
    def post(self, request: Request, job_id) -> Response:
        job = _job_or_404(request, job_id)
        if not request.user.has_perm("jobs.cancel_job"):
            raise PermissionDenied("Cancelling jobs needs the jobs.cancel_job permission.")
        if job.status not in CANCELLABLE_STATUSES or not services.job_cancel(job=job):
            job.refresh_from_db()
            raise Conflict(f"Job {job.pk} has already finished ({job.status}); only unfinished jobs can be cancelled.")
        _log_admin_change(request, job, "Cancelled (API).")
        job.refresh_from_db()
        return Response(job_representation(job, request))


def _log_admin_change(request: Request, job: Job, message: str) -> None:
    """The admin log entry a retry or cancel from the admin writes
    (DESIGN.md, invariant 5), for the same acts over the API."""
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.contenttypes.models import ContentType

    LogEntry.objects.create(
        user_id=request.user.pk,
        content_type_id=ContentType.objects.get_for_model(Job).pk,
        object_id=str(job.pk),
        object_repr=str(job)[:200],
        action_flag=CHANGE,
        change_message=message,
    )


class TaskCatalogue(APIView):
    @extend_schema(operation_id="jobs_tasks", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(
            {
                "tasks": [
                    {
                        "name": name,
                        "queue": task.queue,
                        "doc": inspect.getdoc(task.run) or "",
                        "signature": str(inspect.signature(task.run)),
                    }
                    for name, task in public_job_tasks().items()
                ]
            }
        )
