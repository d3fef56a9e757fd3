"""The report API's shapes for its OpenAPI schema (drf-spectacular): the
views answer with plain dicts (reports.api.run_representation), which no
serializer describes on its own. Documentation only."""

from rest_framework import serializers

from jobs.schema import JobResponse, ProgressResponse


class ReportRunResponse(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    type = serializers.CharField()
    title = serializers.CharField()
    format = serializers.CharField()
    params = serializers.JSONField()
    email_to = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    progress = ProgressResponse()
    error = serializers.CharField(allow_null=True)
    rows = serializers.IntegerField(allow_null=True)
    bytes = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    generated_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    expired = serializers.BooleanField()
    download_url = serializers.URLField(allow_null=True, help_text="Once the report is ready.")
    job = JobResponse(allow_null=True)


class ReportRunListResponse(serializers.Serializer):
    results = ReportRunResponse(many=True, help_text="The newest 100 runs the caller may see.")


class ReportParamResponse(serializers.Serializer):
    kind = serializers.CharField()
    required = serializers.BooleanField()
    default = serializers.JSONField(allow_null=True)
    help = serializers.CharField()


class ReportTypeResponse(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    formats = serializers.ListField(child=serializers.CharField())
    params = serializers.DictField(
        child=ReportParamResponse(), help_text="Each parameter's kind; some kinds add their own keys."
    )
    columns = serializers.ListField(child=serializers.CharField())


class ReportTypeCatalogueResponse(serializers.Serializer):
    types = ReportTypeResponse(many=True, help_text="The types the caller may ask for.")
