"""The report API: ask for a report (202 Accepted; a job on the reports
queue makes it), follow it, download it.

Asking needs reports.add_reportrun and the report type's own permission
(the built-in ones read every job: jobs.view_job). A user sees and
downloads their own runs, and anyone's with reports.view_reportrun; others
get 404, as if the run did not exist. Nobody anonymous gets anything.
"""

from django.db.models import QuerySet
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import job_representation
from jobs.schema import VALIDATION_ERROR, ErrorResponse
from reports import services
from reports.models import ReportFormat, ReportRun
from reports.params import InvalidParams
from reports.registry import report_types
from reports.schema import ReportRunListResponse, ReportRunResponse, ReportTypeCatalogueResponse
from reports.writers import CONTENT_TYPES

LIST_LIMIT = 100


class NotReady(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "not_ready"


class Expired(APIException):
    status_code = status.HTTP_410_GONE
    default_code = "expired"


class ReportRequest(serializers.Serializer):
    type = serializers.CharField(max_length=100)
    format = serializers.ChoiceField(choices=ReportFormat.values)
    params = serializers.JSONField(required=False, default=dict)
    email_to = serializers.ListField(
        child=serializers.CharField(max_length=320), required=False, default=list, max_length=services.MAX_RECIPIENTS
    )


def run_representation(run: ReportRun, request: Request) -> dict:
    job = run.job
    report = report_types().get(run.report_type)
    return {
        "id": str(run.id),
        "url": request.build_absolute_uri(reverse("reports:report-detail", args=[run.id])),
        "type": run.report_type,
        "title": report.title if report else run.report_type,
        "format": run.format,
        "params": run.params,
        "email_to": run.email_to,
        "status": run.status,
        "progress": {"percent": job.progress, "message": job.progress_message}
        if job
        else {"percent": 0, "message": ""},
        "error": (job.error or None) if job else None,
        "rows": run.rows,
        "bytes": run.size,
        "created_at": run.created_at,
        "generated_at": run.generated_at,
        "expires_at": run.expires_at,
        "expired": run.is_expired,
        "download_url": (
            request.build_absolute_uri(reverse("reports:report-download", args=[run.id])) if run.is_ready else None
        ),
        "job": job_representation(job, request, with_result=False) if job else None,
    }


def _visible(request: Request) -> QuerySet[ReportRun]:
    runs = ReportRun.objects.select_related("job")
    if request.user.has_perm("reports.view_reportrun"):
        return runs
    return runs.filter(owner=request.user)


def _visible_run(request: Request, run_id) -> ReportRun:
    run = _visible(request).filter(pk=run_id).first()
    if run is None:
        # 404, not 403: ids are not to be probed.
        raise NotFound("No such report.")
    return run


class ReportCollection(APIView):
    @extend_schema(
        operation_id="reports_request",
        request=ReportRequest,
        responses={202: ReportRunResponse, 400: VALIDATION_ERROR, 403: ErrorResponse},
    )
    def post(self, request: Request) -> Response:
        if not request.user.has_perm("reports.add_reportrun"):
            raise PermissionDenied("Asking for reports needs the reports.add_reportrun permission.")
        payload = ReportRequest(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            run = services.report_request(
                report_type=data["type"],
                format=data["format"],
                params=data["params"],
                email_to=data["email_to"],
                owner=request.user,
            )
        except InvalidParams as exc:
            raise ValidationError(exc.errors) from None
        except services.ReportNotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        body = run_representation(run, request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(operation_id="reports_list", responses={200: ReportRunListResponse})
    def get(self, request: Request) -> Response:
        runs = _visible(request)[:LIST_LIMIT]
        return Response({"results": [run_representation(run, request) for run in runs]})


class ReportDetail(APIView):
    @extend_schema(operation_id="reports_detail", responses={200: ReportRunResponse, 404: ErrorResponse})
    def get(self, request: Request, run_id) -> Response:
        return Response(run_representation(_visible_run(request, run_id), request))


class ReportDownload(APIView):
    @extend_schema(
        operation_id="reports_download",
        responses={
            **{(200, content_type): OpenApiTypes.BINARY for content_type in sorted(set(CONTENT_TYPES.values()))},
            404: ErrorResponse,
            409: ErrorResponse,
            410: ErrorResponse,
        },
        description="The report's file, as an attachment: 409 while it is being made, 410 once it expired.",
    )
    def get(self, request: Request, run_id) -> FileResponse:
        run = _visible_run(request, run_id)
        if run.is_expired:
            raise Expired(f"This report expired at {run.expires_at:%Y-%m-%d %H:%M %Z}; ask for it again.")
        if not run.is_ready:
            raise NotReady(f"The report is not ready yet (job {run.status}); try again when it is SUCCESS.")
        try:
            handle = run.file.open("rb")
        except FileNotFoundError:
            raise Expired("The report's file is gone; ask for it again.") from None
        response = FileResponse(
            handle, as_attachment=True, filename=run.download_name, content_type=CONTENT_TYPES[run.format]
        )
        # Someone's data: no shared cache keeps a copy.
        response["Cache-Control"] = "private, no-store"
        return response


class ReportTypeCatalogue(APIView):
    @extend_schema(operation_id="reports_types", responses={200: ReportTypeCatalogueResponse})
    def get(self, request: Request) -> Response:
        return Response(
            {
                "types": [
                    {
                        "name": name,
                        "title": report.title,
                        "description": report.description,
                        "formats": list(report.formats),
                        "params": {key: param.describe() for key, param in report.params.items()},
                        "columns": [column.heading for column in report.columns],
                    }
                    for name, report in report_types().items()
                    if services.may_request(request.user, report)
                ]
            }
        )
