from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from jobs import api

app_name = "jobs"
urlpatterns = [
    path("jobs/", api.JobCollection.as_view(), name="job-list"),
    path("jobs/bulk/", api.JobBulk.as_view(), name="job-bulk"),
    path("jobs/tasks/", api.TaskCatalogue.as_view(), name="task-list"),
    # <str:>, not <uuid:>: a malformed id gets the API's JSON 404, not
    # Django's HTML page (api._job_or_404).
    path("jobs/<str:job_id>/", api.JobDetail.as_view(), name="job-detail"),
    path("jobs/<str:job_id>/retry/", api.JobRetry.as_view(), name="job-retry"),
    path("jobs/<str:job_id>/cancel/", api.JobCancel.as_view(), name="job-cancel"),
    # The OpenAPI schema of every API of the kit, and a page to read it.
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="jobs:schema"), name="docs"),
]
