"""The Job admin: a list to find jobs, a read-only page per job, and the two
things a person does to jobs, retry and cancel.

Jobs are created and moved only by the services (jobs/services.py), so the
admin never adds or edits a row. Retry and cancel have their own permissions
(jobs.retry_job, jobs.cancel_job), go through the services, and write one
admin log entry per job (DESIGN.md, invariant 5).
"""

import json
from collections import Counter
from datetime import timedelta
from itertools import islice

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters, get_content_type_for_model
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.views.decorators.http import require_POST
from django_celery_results.admin import GroupResultAdmin, TaskResultAdmin
from django_celery_results.models import GroupResult, TaskResult

from jobs import explain, failures, search, services
from jobs.models import CANCELLABLE_STATUSES, FINISHED_STATUSES, RETRYABLE_STATUSES, Job, JobStatus
from jobs.registry import job_tasks
from jobs.search import CappedCountPaginator, jobs_search

# What "retry all failed matching the filter" replays. REVOKED is left out on
# purpose: someone cancelled those, and a bulk retry should not undo that.
BULK_RETRY_STATUSES = (JobStatus.FAILURE, JobStatus.DEAD, JobStatus.LOST)
# Rows fetched per round trip when a bulk action walks a large selection.
CHUNK_SIZE = 500
# Bound on how much retry history one page draws, whatever the data holds.
HISTORY_LIMIT = 50
# Jobs named one by one on a confirmation page; the rest are counted.
CONFIRMATION_LIST_LIMIT = 20

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


def _ago(value, now) -> str:
    seconds = round((now - value).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    if seconds < 60:
        text = f"{seconds} s"
    elif seconds < 3600:
        text = f"{seconds // 60} min {seconds % 60} s"
    elif seconds < 86400:
        text = f"{seconds // 3600} h {seconds % 3600 // 60} min"
    else:
        text = f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    return f"in {text}" if future else f"{text} ago"


def exact_time(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")


def time_cell(value, now=None):
    """Relative ("12 s ago"), with the exact time to the second on hover;
    jobs/static/jobs/console.js keeps the relative text current."""
    if value is None:
        return "-"
    return format_html(
        '<time class="job-time" datetime="{}" title="{}">{}</time>',
        value.isoformat(),
        exact_time(value),
        _ago(value, now or timezone.now()),
    )


def pretty_json(value):
    return format_html('<pre class="job-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False))


def job_link(job: Job):
    url = reverse("admin:jobs_job_change", args=[job.pk])
    return format_html('<a href="{}">{}</a>', url, str(job.pk)[:8])


def superseded_mark(job: Job):
    """ "retried" with a link to the newest retry, or "discarded", on a job
    that ended badly and has been dealt with."""
    if job.status not in RETRYABLE_STATUSES:
        return ""
    retry_id = getattr(job, "latest_retry_id", None)
    if retry_id is not None:
        return format_html(
            ' <a class="job-retried" href="{}" title="Retried: open the newest retry">retried &rarr; {}</a>',
            reverse("admin:jobs_job_change", args=[retry_id]),
            str(retry_id)[:8],
        )
    if job.resolved_at is not None:
        return format_html(
            ' <span class="job-discarded" title="Discarded {}">discarded</span>', exact_time(job.resolved_at)
        )
    return ""


class StatusFilter(admin.SimpleListFilter):
    """The status codes, as the badges and the API name them (REVOKED, not
    "Cancelled"); the longer label is the link's tooltip. Same query
    parameter as the admin's own field filter, so old links still work."""

    title = "status"
    parameter_name = "status__exact"
    template = "admin/jobs/job/status_filter.html"

    def lookups(self, request, model_admin):
        return [(status.value, status.value) for status in JobStatus]

    def choices(self, changelist):
        labels = dict(JobStatus.choices)
        for choice in super().choices(changelist):
            choice["label"] = labels.get(choice.get("display"), "")
            yield choice

    # The status field's path from the list's model: "status" here,
    # "job__status" for the domain models' lists (job_status_filter).
    field_path = "status"

    def queryset(self, request, queryset):
        if self.value() in JobStatus.values:
            return queryset.filter(**{self.field_path: self.value()})
        return queryset


def job_status_filter(field_path: str) -> type[StatusFilter]:
    """StatusFilter for a model whose rows point at a job (images, report
    runs), so their lists name statuses as the job admin does. Its query
    parameter has no "__": the admin refuses related lookups that its
    list_filter does not name as a string."""
    return type(
        "JobStatusFilter",
        (StatusFilter,),
        {"field_path": field_path, "parameter_name": field_path.replace("__", "_"), "title": "job status"},
    )


class SupersededFilter(admin.SimpleListFilter):
    """Failures that were retried or discarded are history: hidden unless
    asked for, so the failure views list what still needs a person."""

    title = "retried or discarded failures"
    parameter_name = "superseded"

    def lookups(self, request, model_admin):
        return [("show", "Shown")]

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "Hidden",
        }
        yield {
            "selected": self.value() == "show",
            "query_string": changelist.get_query_string({self.parameter_name: "show"}),
            "display": "Shown",
        }

    def queryset(self, request, queryset):
        if self.value() == "show":
            return queryset
        return queryset.exclude(failures.superseded())


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
    # Narrow enough for 1366 px beside the filters: the error is one
    # ellipsised line (whole on hover), queue and priority share a column.
    list_display = [
        "short_id",
        "task_name",
        "status_column",
        "error_column",
        "queue_column",
        "attempts",
        "progress_column",
        "wait_column",
        "runtime_column",
        "requested_by_column",
        "created_column",
    ]
    list_display_links = ["short_id"]
    list_filter = [StatusFilter, SupersededFilter, TaskNameFilter, "queue", "priority", "created_at"]
    list_select_related = ["requested_by"]
    # Searched in get_search_results (jobs.search); declaring a field is what
    # makes the admin show the search box.
    search_fields = ["task_name"]
    search_help_text = "A job id (whole, or its first characters), or a word of its task name, error or arguments."
    # The unfiltered count(*) the admin shows next to a filtered one is a
    # full scan of a table that holds millions of rows; skip it.
    show_full_result_count = False
    actions = ["retry_selected", "cancel_selected"]

    readonly_fields = [
        "status_column",
        "why_waiting",
        "links",
        "created_time",
        "eta_time",
        "queued_time",
        "started_time",
        "finished_time",
        "resolved_time",
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
        (
            None,
            {
                "fields": [
                    "id",
                    "task_name",
                    "status_column",
                    "why_waiting",
                    "error",
                    "progress_bar",
                    "requested_by",
                    "links",
                ]
            },
        ),
        ("Arguments (what a retry replays)", {"fields": ["args_json", "kwargs_json"]}),
        ("Result", {"fields": ["result_json", "traceback", "task_result_link"]}),
        ("Retry history", {"fields": ["retry_history"]}),
        (
            "Timing",
            {
                "fields": [
                    "created_time",
                    "eta_time",
                    "queued_time",
                    "started_time",
                    "finished_time",
                    "wait_column",
                    "runtime_column",
                    "resolved_time",
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

    def get_queryset(self, request):
        # The newest retry of each row, for the "retried" mark: one index
        # probe per row shown.
        return super().get_queryset(request).annotate(latest_retry_id=failures.newest_retry_id())

    @admin.display(description="status", ordering="status")
    def status_column(self, job):
        return format_html("{}{}", status_badge(job), superseded_mark(job))

    @admin.display(description="error")
    def error_column(self, job):
        if not job.error:
            return ""
        first_line = job.error.splitlines()[0]
        return format_html('<span class="job-error" title="{}">{}</span>', job.error, first_line)

    @admin.display(description="queue", ordering="queue")
    def queue_column(self, job):
        return format_html('{}<br><span class="job-priority">{}</span>', job.queue, job.priority)

    @admin.display(description="progress", ordering="progress")
    def progress_column(self, job):
        return f"{job.progress} %"

    @admin.display(description="run")
    def runtime_column(self, job):
        return duration(job.runtime)

    @admin.display(description="wait")
    def wait_column(self, job):
        return duration(job.wait)

    @admin.display(description="by", ordering="requested_by__username")
    def requested_by_column(self, job):
        return job.requested_by.get_username() if job.requested_by else "-"

    @admin.display(description="created", ordering="created_at")
    def created_column(self, job):
        return time_cell(job.created_at)

    def get_search_results(self, request, queryset, search_term):
        return jobs_search(queryset, search_term), False

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        # A search's count stops at a limit ("more than 1,000 jobs"): on a
        # common word an exact count read every matching row. Lists without
        # a search keep their exact count (filters are indexed).
        if request.GET.get(SEARCH_VAR, "").strip():
            return CappedCountPaginator(
                queryset, per_page, orphans, allow_empty_first_page, count_limit=search.SEARCH_COUNT_LIMIT
            )
        return super().get_paginator(request, queryset, per_page, orphans, allow_empty_first_page)

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_retry": self.has_retry_permission(request),
            "failure_groups_url": reverse("admin:jobs_job_failure_groups"),
        }
        return super().changelist_view(request, extra_context)

    # -- The detail page ------------------------------------------------------

    @admin.display(description="progress")
    def progress_bar(self, job):
        return format_html(
            '<progress class="job-progress" value="{}" max="100" style="vertical-align:middle"></progress> '
            '<span class="job-progress-text">{} % {}</span>',
            job.progress,
            job.progress,
            job.progress_message,
        )

    @admin.display(description="why it is not done")
    def why_waiting(self, job):
        sentence = explain.job_explain(job)
        return format_html('<span class="job-explanation">{}</span>', sentence or "It has finished.")

    @admin.display(description="links")
    def links(self, job):
        found = explain.job_links(job)
        if not found:
            return "-"
        return format_html_join(" · ", '<a href="{}" class="job-link">{}</a>', found)

    @admin.display(description="created")
    def created_time(self, job):
        return time_cell(job.created_at)

    @admin.display(description="not before (eta)")
    def eta_time(self, job):
        return time_cell(job.eta)

    @admin.display(description="queued")
    def queued_time(self, job):
        return time_cell(job.queued_at)

    @admin.display(description="started")
    def started_time(self, job):
        return time_cell(job.started_at)

    @admin.display(description="finished")
    def finished_time(self, job):
        return time_cell(job.finished_at)

    @admin.display(description="discarded")
    def resolved_time(self, job):
        return time_cell(job.resolved_at)

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
            # A retried job's Retry button retries its latest attempt (when
            # that one ended badly too), as _retry does.
            latest = failures.latest_attempt(job)
            extra_context["latest_attempt"] = latest if latest.pk != job.pk else None
            extra_context["can_retry"] = latest.status in RETRYABLE_STATUSES and self.has_retry_permission(request, job)
            extra_context["can_cancel"] = job.status in CANCELLABLE_STATUSES and self.has_cancel_permission(
                request, job
            )
            extra_context["job_api_url"] = reverse("jobs:job-detail", args=[job.pk])
            extra_context["status_colours"] = {str(status): colour for status, colour in STATUS_COLOURS.items()}
        return super().change_view(request, object_id, form_url, extra_context)

    # -- Retry and cancel ----------------------------------------------------

    @admin.action(description="Retry the selected jobs", permissions=["retry"])
    def retry_selected(self, request, queryset):
        self._retry(request, queryset.iterator(chunk_size=CHUNK_SIZE))

    @admin.action(description="Cancel the selected jobs", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        """Asks first, as the delete action does: a running job is killed."""
        if request.POST.get("confirmed") == "yes":
            self._cancel(request, queryset.iterator(chunk_size=CHUNK_SIZE))
            return None
        shown = list(queryset[:CONFIRMATION_LIST_LIMIT])
        context = {
            **self.admin_site.each_context(request),
            "title": "Cancel the selected jobs?",
            "opts": self.opts,
            "jobs": shown,
            "more": max(0, queryset.count() - len(shown)),
            "running": queryset.filter(status=JobStatus.STARTED).count(),
            "selected_ids": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "back_url": reverse("admin:jobs_job_changelist"),
        }
        return TemplateResponse(request, "admin/jobs/job/cancel_confirmation.html", context)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        return [
            path("retry-failed/", view(self.retry_failed_view), name="{}_{}_retry_failed".format(*info)),
            path("failures/", view(self.failure_groups_view), name="{}_{}_failure_groups".format(*info)),
            path(
                "failures/<str:key>/",
                view(require_POST(self.failure_group_action_view)),
                name="{}_{}_failure_group_action".format(*info),
            ),
            path("<path:object_id>/retry/", view(require_POST(self.retry_view)), name="{}_{}_retry".format(*info)),
            path("<path:object_id>/cancel/", view(self.cancel_view), name="{}_{}_cancel".format(*info)),
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
        """The detail page's Cancel button: a confirmation page first (GET),
        saying what cancelling does to this job; the POST cancels and comes
        back to the job."""
        job = self._get_job_or_404(request, object_id)
        if not self.has_cancel_permission(request, job):
            raise PermissionDenied
        if request.method == "POST":
            self._cancel(request, [job])
            return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Cancel this job?",
            "opts": self.opts,
            "jobs": [job],
            "running": 1 if job.status == JobStatus.STARTED else 0,
            "back_url": reverse("admin:jobs_job_change", args=[job.pk]),
        }
        return TemplateResponse(request, "admin/jobs/job/cancel_confirmation.html", context)

    def retry_failed_view(self, request):
        """Retry every failed, dead or lost job that the list's current
        filters and search select, after a confirmation page.

        Jobs that were already retried or discarded are left out, so pressing
        the button twice does not run the same work twice; so are failures on
        bad input (BadInput), which would fail the same way again, unless the
        confirmation's box asks for them. It runs in the request, 500 jobs
        per commit and publish (services.jobs_retry_many); for hundreds of
        thousands of jobs, `manage.py requeue_jobs` does the same from a
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
        candidates = (
            changelist.get_queryset(request).filter(status__in=BULK_RETRY_STATUSES).exclude(failures.superseded())
        )
        bad_input = candidates.filter(failures.bad_input())
        include_bad_input = request.POST.get("include_bad_input") == "yes"
        jobs = candidates if include_bad_input else candidates.exclude(failures.bad_input())
        if request.method == "POST":
            left_out = 0 if include_bad_input else bad_input.count()
            self._retry(request, jobs.iterator(chunk_size=CHUNK_SIZE))
            if left_out:
                messages.warning(request, _bad_input_left_out(left_out))
            return HttpResponseRedirect(f"{changelist_url}?{query_string}" if query_string else changelist_url)
        bad_input_count = bad_input.count()
        context = {
            **self.admin_site.each_context(request),
            "title": "Retry failed jobs matching the filter",
            "opts": self.opts,
            "count": candidates.count() - bad_input_count,
            "bad_input_count": bad_input_count,
            "active_filters": _describe_filters(changelist),
            "query_string": query_string,
            "changelist_url": changelist_url,
        }
        return TemplateResponse(request, "admin/jobs/job/retry_failed_confirmation.html", context)

    # -- Failures grouped by cause ---------------------------------------------

    def failure_groups_view(self, request):
        """Open failures (failed, dead, lost; not retried, not discarded)
        grouped by fingerprint: task, exception type, normalised message."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        found = failures.failure_groups()
        context = {
            **self.admin_site.each_context(request),
            "title": "Failures grouped by cause",
            "opts": self.opts,
            "groups": found.groups,
            "scanned": found.scanned,
            "truncated": found.truncated,
            "scan_limit": failures.GROUP_SCAN_LIMIT,
            "can_retry": self.has_retry_permission(request),
            "can_discard": self.has_retry_permission(request),
            "changelist_url": reverse("admin:jobs_job_changelist"),
        }
        return TemplateResponse(request, "admin/jobs/job/failure_groups.html", context)

    def failure_group_action_view(self, request, key):
        """ "retry" or "discard" every job of one group, as the page listed it."""
        back = reverse("admin:jobs_job_failure_groups")
        # Discarding is the retry permission's too: both decide what becomes
        # of a failure.
        if not self.has_retry_permission(request):
            raise PermissionDenied
        group = failures.failure_group(key)
        if group is None:
            messages.info(request, "That group has no open failures any more.")
            return HttpResponseRedirect(back)
        action = request.POST.get("action")
        if action == "retry":
            self._retry(request, Job.objects.filter(pk__in=group.job_ids).iterator(chunk_size=CHUNK_SIZE))
        elif action == "discard":
            discarded = failures.failures_discard(group.job_ids)
            self._log_changes(
                request, [(job, "Discarded (marked resolved).") for job in Job.objects.filter(pk__in=group.job_ids)]
            )
            messages.success(
                request,
                f"Discarded {_jobs(discarded)} of {group.task_name} ({group.exc_type or 'error'}): they stay as "
                "history, out of the default failure views.",
            )
        else:
            messages.error(request, f"Unknown action {action!r}: retry or discard.")
        return HttpResponseRedirect(back)

    def _get_job_or_404(self, request, object_id) -> Job:
        job = self.get_object(request, object_id)
        if job is None:
            raise Http404(f"No job with id {object_id!r}.")
        return job

    def _retry(self, request, jobs) -> list[Job]:
        """Retry each job that can be; report what was retried and what was
        skipped, and why. A job that was already retried stands for its
        latest attempt: that is what is retried, if it too ended badly.
        Returns the new jobs."""
        retried: list[Job] = []
        skipped: Counter[str] = Counter()
        tasks = job_tasks()
        jobs = iter(jobs)
        while chunk := list(islice(jobs, CHUNK_SIZE)):
            retryable = []
            chosen = set()  # two selected jobs of one chain share a latest attempt
            for asked in chunk:
                job = failures.latest_attempt(asked)
                later = f"its latest attempt {str(job.pk)[:8]} " if job.pk != asked.pk else ""
                if job.status not in RETRYABLE_STATUSES:
                    skipped[f"{later or 'it '}was {job.status}"] += 1
                elif job.task_name not in tasks:
                    skipped[f"its task {job.task_name} no longer exists"] += 1
                elif job.pk in chosen:
                    skipped[f"{later or 'it '}was already being retried"] += 1
                else:
                    retryable.append(job)
                    chosen.add(job.pk)
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


def _history_note(other: Job, current: Job) -> str:
    if other.retry_of_id is None:
        return "the original"
    if other.retry_of_id == current.pk:
        return "retry of this job"
    return f"retry of {str(other.retry_of_id)[:8]}"


def _bad_input_left_out(count: int) -> str:
    return (
        f"Left out {_jobs(count)} that failed on bad input (BadInput): run again, they fail the same way. "
        'Tick "also retry failures on bad input" on the confirmation to retry them anyway.'
    )


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


# django-celery-results' own admin offers Add and Save on rows that only
# the result backend writes: the same admin, read-only. Its rows are the
# Job pages' "task result" links.
admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class ReadOnlyTaskResultAdmin(TaskResultAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # jobs_prune deletes them with their jobs.
        return False


# The same for the results of Celery groups (chords), which only the result
# backend writes.
admin.site.unregister(GroupResult)


@admin.register(GroupResult)
class ReadOnlyGroupResultAdmin(GroupResultAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
