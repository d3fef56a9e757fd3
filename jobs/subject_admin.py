"""Admin columns for a domain object that follows a job (an image, a report
run): its job's status, progress, link and error, written once for every
app whose model has a `job` foreign key to jobs.Job."""

from django.contrib import admin

from jobs.admin import job_link, status_badge


class FollowsJobAdminMixin:
    """status_column, progress_column, job_column and error for a ModelAdmin
    whose model has a nullable `job` foreign key (select_related it)."""

    @admin.display(description="status", ordering="job__status")
    def status_column(self, subject):
        return status_badge(subject.job) if subject.job else "-"

    @admin.display(description="progress")
    def progress_column(self, subject):
        return f"{subject.job.progress}% {subject.job.progress_message}".strip() if subject.job else "-"

    @admin.display(description="job")
    def job_column(self, subject):
        return job_link(subject.job) if subject.job else "-"

    @admin.display(description="error")
    def error(self, subject):
        return (subject.job.error if subject.job else "") or "-"
