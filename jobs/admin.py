"""The Job admin: a list to find jobs, a read-only page per job, and the two
things a person does to jobs, retry and cancel.

Jobs are created and moved only by the services (jobs/services.py), so the
admin never adds or edits a row. Retry and cancel have their own permissions
(jobs.retry_job, jobs.cancel_job), go through the services, and write one
admin log entry per job (DESIGN.md, invariant 5).
"""

import json
import uuid
from collections import Counter
from datetime import timedelta
from itertools import islice

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters, get_content_type_for_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.views.decorators.http import require_POST

from jobs import services
from jobs.models import CANCELLABLE_STATUSES, FINISHED_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from jobs.registry import job_tasks

# What "retry all failed matching the filter" replays. REVOKED is left out on
# purpose: someone cancelled those, and a bulk retry should not undo that.
BULK_RETRY_STATUSES = (JobStatus.FAILURE, JobStatus.DEAD, JobStatus.LOST)
# Rows fetched per round trip when a bulk action walks a large selection.
CHUNK_SIZE = 500
# Bound on how much retry history one page draws, whatever the data holds.
HISTORY_LIMIT = 50

STATUS_COLOURS = {
    JobStatus.PENDING: "#6c757d",
    JobStatus.QUEUED: "#8a6d00",
    JobStatus.STARTED: "#0b63b6",
    JobStatus.RETRYING: "#b35900",
    JobStatus.SUCCESS: "#1e7b34",
    JobStatus.FAILURE: "#b02a37",
    JobStatus.REVOKED: "#495057",
    JobStatus.DEAD: "#6f1d1b",
    JobStatus.LOST: "#6f1d1b",
}


def status_badge(job: Job):
    # White on a dark colour reads in the admin's light and dark themes.
    return format_html(
        '<span class="job-status" title="{}" style="background:{};color:#fff;padding:2px 7px;'
        'border-radius:9px;font-size:0.75rem;white-space:nowrap">{}</span>',
        job.get_status_display(),
        STATUS_COLOURS.get(job.status, "#6c757d"),
        job.status,
    )


def duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def pretty_json(value):
    return format_html('<pre class="job-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False))


def job_link(job: Job):
    url = reverse("admin:jobs_job_change", args=[job.pk])
    return format_html('<a href="{}">{}</a>', url, str(job.pk)[:8])


class TaskNameFilter(admin.SimpleListFilter):
    """Tasks from the registry, instead of a SELECT DISTINCT over every job."""

    title = "task"
    parameter_name = "task_name"

    def lookups(self, request, model_admin):
        return [(name, name) for name in job_tasks()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(task_name=self.value())
        return queryset


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "task_name",
        "status_column",
        "queue",
        "priority",
        "attempts",
        "progress_column",
        "runtime_column",
        "requested_by",
        "created_at",
    ]
    list_display_links = ["short_id"]
    list_filter = ["status", TaskNameFilter, "queue", "priority", "created_at"]
    list_select_related = ["requested_by"]
    # Searched in get_search_results (by id, then task name); declaring a
    # field is what makes the admin show the search box.
    search_fields = ["task_name"]
    search_help_text = "A job id (whole, or its first characters) or part of a task name."
    # The unfiltered count(*) the admin shows next to a filtered one is a
    # full scan of a table that holds millions of rows; skip it.
    show_full_result_count = False
    actions = ["retry_selected", "cancel_selected"]

    readonly_fields = [
        "status_column",
        "progress_bar",
        "wait_column",
        "runtime_column",
        "args_json",
        "kwargs_json",
        "result_json",
        "traceback",
        "task_result_link",
        "retry_history",
    ]
    fieldsets = [
        (None, {"fields": ["id", "task_name", "status_column", "error", "progress_bar", "requested_by"]}),
        ("Arguments (what a retry replays)", {"fields": ["args_json", "kwargs_json"]}),
        ("Result", {"fields": ["result_json", "traceback", "task_result_link"]}),
        ("Retry history", {"fields": ["retry_history"]}),
        (
            "Timing",
            {
                "fields": [
                    "created_at",
                    "eta",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "wait_column",
                    "runtime_column",
                ]
            },
        ),
        ("Delivery", {"fields": ["queue", "priority", "attempts", "deliveries", "worker", "unique_key"]}),
    ]

    # -- Permissions ---------------------------------------------------------

    def has_add_permission(self, request):
        # A job is created with its arguments checked and published after
        # commit, which only jobs.services does.
        return False

    def has_change_permission(self, request, obj=None):
        # Every field is the services' and the workers' to write; the detail
        # page is view-only for everyone, superusers included.
        return False

    def has_delete_permission(self, request, obj=None):
        # A deleted active job would still be delivered, and then run as an
        # untracked task; cancel it first. The bulk delete asks this per row.
        if obj is not None and obj.status not in FINISHED_STATUSES:
            return False
        return super().has_delete_permission(request, obj)

    def has_retry_permission(self, request, obj=None):
        return request.user.has_perm("jobs.retry_job")

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("jobs.cancel_job")

    # -- The list --------------------------------------------------------------

    @admin.display(description="id", ordering="id")
    def short_id(self, job):
        return str(job.pk)[:8]

    @admin.display(description="status", ordering="status")
    def status_column(self, job):
        return status_badge(job)

    @admin.display(description="progress", ordering="progress")
    def progress_column(self, job):
        return f"{job.progress} %"

    @admin.display(description="runtime")
    def runtime_column(self, job):
        return duration(job.runtime)

    @admin.display(description="wait (queued to started)")
    def wait_column(self, job):
        return duration(job.wait)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            job_id = uuid.UUID(term)
        except ValueError:
            pass
        else:
            # A whole id: one primary-key lookup, nothing else can match.
            return queryset.filter(pk=job_id), False
        matches = Q(task_name__icontains=term)
        if _looks_like_id_prefix(term):
            # The list shows the first 8 characters of the id, so searching
            # them finds the job. A prefix cannot use the primary-key index;
            # neither can the task name's icontains, and both are fine for a
            # person typing into the admin.
            matches |= Q(pk__istartswith=term)
        return queryset.filter(matches), False

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_retry": self.has_retry_permission(request)}
        return super().changelist_view(request, extra_context)

    # -- The detail page ------------------------------------------------------

    @admin.display(description="progress")
    def progress_bar(self, job):
        return format_html(
            '<progress value="{}" max="100" style="vertical-align:middle"></progress> {} % {}',
            job.progress,
            job.progress,
            job.progress_message,
        )

    @admin.display(description="args")
    def args_json(self, job):
        return pretty_json(job.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, job):
        return pretty_json(job.kwargs)

    @admin.display(description="result")
    def result_json(self, job):
        result = _task_result(job)
        if result is None or result.result is None:
            return "-"
        try:
            return pretty_json(json.loads(result.result))
        except ValueError:
            return format_html('<pre class="job-json">{}</pre>', result.result)

    @admin.display(description="traceback")
    def traceback(self, job):
        result = _task_result(job)
        if result is None or not result.traceback:
            return "-"
        return format_html('<pre class="job-traceback">{}</pre>', result.traceback)

    @admin.display(description="task result")
    def task_result_link(self, job):
        result = _task_result(job)
        if result is None:
            return "None yet: the job has not finished."
        url = reverse("admin:django_celery_results_taskresult_change", args=[result.pk])
        return format_html('<a href="{}">{} ({})</a>', url, result.task_id, result.status)

    @admin.display(description="retries")
    def retry_history(self, job):
        """Oldest first: the jobs this one retries, this job, then its retries
        (and theirs), each with its status."""
        older = []
        ancestor = job.retry_of
        while ancestor is not None and len(older) < HISTORY_LIMIT:
            older.append(ancestor)
            ancestor = ancestor.retry_of
        newer = []
        frontier = [job.pk]
        while frontier and len(newer) < HISTORY_LIMIT:
            level = list(Job.objects.filter(retry_of__in=frontier).order_by("created_at")[:HISTORY_LIMIT])
            newer.extend(level)
            frontier = [retry.pk for retry in level]
        if not older and not newer:
            return "None: this job is not a retry and was not retried."
        rows = [(job_link(other), status_badge(other), _history_note(other, job)) for other in reversed(older)]
        rows.append((format_html("<strong>{}</strong>", str(job.pk)[:8]), status_badge(job), "this job"))
        rows += [(job_link(other), status_badge(other), _history_note(other, job)) for other in newer]
        return format_html(
            '<ol class="job-retry-history" style="margin:0;padding-left:1.5em">{}</ol>',
            format_html_join("", "<li>{} {} {}</li>", rows),
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if job is not None:
            extra_context["can_retry"] = job.status in RETRYABLE_STATUSES and self.has_retry_permission(request, job)
            extra_context["can_cancel"] = job.status in CANCELLABLE_STATUSES and self.has_cancel_permission(
                request, job
            )
        return super().change_view(request, object_id, form_url, extra_context)

    # -- Retry and cancel ----------------------------------------------------

    @admin.action(description="Retry the selected jobs", permissions=["retry"])
    def retry_selected(self, request, queryset):
        self._retry(request, queryset.iterator(chunk_size=CHUNK_SIZE))

    @admin.action(description="Cancel the selected jobs", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        self._cancel(request, queryset.iterator(chunk_size=CHUNK_SIZE))

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("retry-failed/", view(self.retry_failed_view), name="{}_{}_retry_failed".format(*info)),
            path("<path:object_id>/retry/", view(require_POST(self.retry_view)), name="{}_{}_retry".format(*info)),
            path("<path:object_id>/cancel/", view(require_POST(self.cancel_view)), name="{}_{}_cancel".format(*info)),
            *super().get_urls(),
        ]

    def retry_view(self, request, object_id):
        """The detail page's Retry button; opens the new job."""
        job = self._get_job_or_404(request, object_id)
        if not self.has_retry_permission(request, job):
            raise PermissionDenied
        retried = self._retry(request, [job])
        target = retried[0] if retried else job
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[target.pk]))

    def cancel_view(self, request, object_id):
        """The detail page's Cancel button; comes back to the same page."""
        job = self._get_job_or_404(request, object_id)
        if not self.has_cancel_permission(request, job):
            raise PermissionDenied
        self._cancel(request, [job])
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))

    def retry_failed_view(self, request):
        """Retry every failed, dead or lost job that the list's current
        filters and search select, after a confirmation page.

        Jobs that were already retried are left out, so pressing the button
        twice does not run the same work twice. It runs in the request, 500
        jobs per commit and publish (services.jobs_retry_many); for hundreds
        of thousands of jobs, `manage.py requeue_jobs` does the same from a
        shell.
        """
        if not self.has_retry_permission(request):
            raise PermissionDenied
        # The changelist reads its filters from the query string; the page
        # number would only restrict it to one page of results.
        request.GET = request.GET.copy()
        request.GET.pop("p", None)
        changelist_url = reverse("admin:jobs_job_changelist")
        query_string = request.GET.urlencode()
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            messages.error(request, "Those filters are not valid; choose them again.")
            return HttpResponseRedirect(changelist_url)
        jobs = changelist.get_queryset(request).filter(status__in=BULK_RETRY_STATUSES, retries__isnull=True)
        if request.method == "POST":
            self._retry(request, jobs.iterator(chunk_size=CHUNK_SIZE))
            return HttpResponseRedirect(f"{changelist_url}?{query_string}" if query_string else changelist_url)
        context = {
            **self.admin_site.each_context(request),
            "title": "Retry failed jobs matching the filter",
            "opts": self.opts,
            "count": jobs.count(),
            "active_filters": _describe_filters(changelist),
            "query_string": query_string,
            "changelist_url": changelist_url,
        }
        return TemplateResponse(request, "admin/jobs/job/retry_failed_confirmation.html", context)

    def _get_job_or_404(self, request, object_id) -> Job:
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404(f"No job with id {object_id!r}.")
        return job

    def _retry(self, request, jobs) -> list[Job]:
        """Retry each job that can be; report what was retried and what was
        skipped, and why. Returns the new jobs."""
        retried: list[Job] = []
        skipped: Counter[str] = Counter()
        tasks = job_tasks()
        jobs = iter(jobs)
        while chunk := list(islice(jobs, CHUNK_SIZE)):
            retryable = []
            for job in chunk:
                if job.status not in RETRYABLE_STATUSES:
                    skipped[f"it was {job.status}"] += 1
                elif job.task_name not in tasks:
                    skipped[f"its task {job.task_name} no longer exists"] += 1
                else:
                    retryable.append(job)
            # A chunk's new jobs and their log entries commit together, and
            # are published together when that commit happens.
            with transaction.atomic():
                new_jobs = services.jobs_retry_many(jobs=retryable, requested_by=request.user)
                changes = zip(retryable, new_jobs, strict=True)
                self._log_changes(request, [(job, f"Retried as job {new_job.pk}.") for job, new_job in changes])
            retried.extend(new_jobs)
        if retried:
            messages.success(request, f"Retried {_jobs(len(retried))}.")
        if skipped:
            messages.warning(
                request,
                f"Skipped {_jobs(sum(skipped.values()))}: only failed, cancelled, dead or lost jobs can be "
                f"retried ({_reasons(skipped)}).",
            )
        if not retried and not skipped:
            messages.info(request, "No jobs to retry.")
        return retried

    def _log_changes(self, request, changes: list[tuple[Job, str]]) -> None:
        """What log_change writes, one LogEntry per job, in one INSERT."""
        content_type_id = get_content_type_for_model(self.model).pk
        LogEntry.objects.bulk_create(
            LogEntry(
                user_id=request.user.pk,
                content_type_id=content_type_id,
                object_id=str(job.pk),
                object_repr=str(job)[:200],
                action_flag=CHANGE,
                change_message=message,
            )
            for job, message in changes
        )

    def _cancel(self, request, jobs) -> int:
        """Cancel each job that has not finished; report the rest."""
        cancelled = 0
        skipped: Counter[str] = Counter()
        jobs = iter(jobs)
        while chunk := list(islice(jobs, CHUNK_SIZE)):
            candidates = [job for job in chunk if job.status in CANCELLABLE_STATUSES]
            # The service reads the statuses again under a lock, so a job that
            # finished since this read is skipped, not undone.
            done = services.jobs_cancel_many(job_ids=[job.pk for job in candidates]) if candidates else set()
            for job in chunk:
                if job.pk not in done:
                    skipped[f"it had already ended ({job.status})"] += 1
            self._log_changes(request, [(job, "Cancelled.") for job in candidates if job.pk in done])
            cancelled += len(done)
        if cancelled:
            messages.success(request, f"Cancelled {_jobs(cancelled)}.")
        if skipped:
            messages.warning(
                request,
                f"Skipped {_jobs(sum(skipped.values()))}: only jobs that have not finished can be cancelled "
                f"({_reasons(skipped)}).",
            )
        return cancelled


def _task_result(job: Job):
    # Three fields of the detail page show parts of the same row: read it once.
    if not hasattr(job, "_admin_task_result"):
        job._admin_task_result = job.task_result
    return job._admin_task_result


def _looks_like_id_prefix(term: str) -> bool:
    return len(term) >= 4 and all(char in "0123456789abcdefABCDEF-" for char in term)


def _history_note(other: Job, current: Job) -> str:
    if other.retry_of_id is None:
        return "the original"
    if other.retry_of_id == current.pk:
        return "retry of this job"
    return f"retry of {str(other.retry_of_id)[:8]}"


def _jobs(count: int) -> str:
    return f"{count} job" if count == 1 else f"{count} jobs"


def _reasons(skipped: Counter) -> str:
    return "; ".join(f"{count} because {reason}" for reason, count in skipped.most_common())


def _describe_filters(changelist) -> list[str]:
    """The list's active filters and search, in words, for the confirmation."""
    described = []
    for spec in changelist.filter_specs:
        if not spec.used_parameters:
            continue
        chosen = [str(choice["display"]) for choice in spec.choices(changelist) if choice["selected"]]
        described.append(f"{capfirst(spec.title)}: {', '.join(chosen)}")
    if changelist.query:
        described.append(f"Search: {changelist.query}")
    return described
