from django.urls import path

from reports import api

app_name = "reports"
urlpatterns = [
    path("reports/", api.ReportCollection.as_view(), name="report-list"),
    path("reports/types/", api.ReportTypeCatalogue.as_view(), name="type-list"),
    path("reports/<uuid:run_id>/", api.ReportDetail.as_view(), name="report-detail"),
    path("reports/<uuid:run_id>/download/", api.ReportDownload.as_view(), name="report-download"),
]
