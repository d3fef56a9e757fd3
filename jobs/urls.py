from django.urls import path

from jobs import api

app_name = "jobs"
urlpatterns = [
    path("jobs/", api.JobCollection.as_view(), name="job-list"),
    path("jobs/bulk/", api.JobBulk.as_view(), name="job-bulk"),
    path("jobs/<uuid:job_id>/", api.JobDetail.as_view(), name="job-detail"),
    path("jobs/tasks/", api.TaskCatalogue.as_view(), name="task-list"),
]
