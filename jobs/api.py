"""The JSON API: enqueue a registered task (202 Accepted) and follow it.

Authentication is a staff session (the admin's login) or a token
(`Authorization: Token <key>`, see `manage.py drf_create_token`). Enqueueing
needs jobs.add_job; a user reads their own jobs, and anyone's with
jobs.view_job. Nobody anonymous gets anything.
"""

import inspect
import json

from django.db.models import QuerySet
from django.urls import reverse
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import explain, services
from jobs.exceptions import BadInput
from jobs.models import Job, JobStatus
from jobs.queues import Priority
from jobs.registry import public_job_tasks

MAX_COUNTDOWN_SECONDS = 7 * 24 * 3600
LIST_LIMIT = 100
# Jobs per bulk request (the body limit, DATA_UPLOAD_MAX_MEMORY_SIZE, also
# applies).
BULK_LIMIT = 10_000


def _check_task_and_arguments(task_name: str, calls: list[tuple[list, dict]], *, field: str = "args") -> None:
    """Refuse an unknown task, or arguments it cannot take, here with a 400,
    rather than as failed jobs later."""
    tasks = public_job_tasks()
    task = tasks.get(task_name)
    if task is None:
        raise ValidationError({"task": f"Unknown task {task_name!r}. Available: {', '.join(tasks) or 'none'}."})
    signature = inspect.signature(task.run)
    for index, (args, kwargs) in enumerate(calls):
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            where = f"{field}[{index}]: " if field == "calls" else ""
            raise ValidationError({field: f"{where}{task_name}: {exc}"}) from None


class EnqueueRequest(serializers.Serializer):
    task = serializers.CharField(max_length=200)
    args = serializers.ListField(required=False, default=list)
    kwargs = serializers.DictField(required=False, default=dict)
    priority = serializers.ChoiceField(choices=[p.value for p in Priority], default=Priority.MEDIUM.value)
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
    priority = serializers.ChoiceField(choices=[p.value for p in Priority], default=Priority.MEDIUM.value)

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


class JobCollection(APIView):
    def post(self, request: Request) -> Response:
        _require_add_permission(request)
        payload = EnqueueRequest(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            job = services.job_enqueue(
                task_name=data["task"],
                args=data["args"],
                kwargs=data["kwargs"],
                priority=data["priority"],
                countdown=data.get("countdown"),
                unique_key=data.get("unique_key"),
                requested_by=request.user,
            )
        except BadInput as exc:
            raise ValidationError({"detail": str(exc)}) from None
        body = job_representation(job, request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    def get(self, request: Request) -> Response:
        jobs = _visible_jobs(request)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in JobStatus.values:
                raise ValidationError({"status": f"Unknown status {wanted!r}. One of: {', '.join(JobStatus.values)}."})
            jobs = jobs.filter(status=wanted)
        return Response({"results": [job_representation(job, request, with_result=False) for job in jobs[:LIST_LIMIT]]})


class JobBulk(APIView):
    """Many jobs of one task from one request: {"task": ..., "calls":
    [{"args": [...], "kwargs": {...}}, ...], "priority": ...}. All or none:
    one bad call refuses the request. Answers 202 with the jobs' ids."""

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


class JobDetail(APIView):
    def get(self, request: Request, job_id) -> Response:
        job = Job.objects.filter(pk=job_id).first()
        # Ownership first: following one's own job, what a client polls for,
        # costs no permission queries (two of a GET's five before).
        own = job is not None and request.user.is_authenticated and job.requested_by_id == request.user.pk
        if job is None or not (own or request.user.has_perm("jobs.view_job")):
            # 404, not 403, for someone else's job: ids are not to be probed.
            raise NotFound("No such job.")
        return Response(job_representation(job, request))


class TaskCatalogue(APIView):
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
