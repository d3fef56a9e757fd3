"""Shapes shared by the kit's OpenAPI schema (drf-spectacular): what
jobs.api.job_representation answers, for the domain APIs that embed a job.
Documentation only; the views build plain dicts."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ProgressResponse(serializers.Serializer):
    percent = serializers.IntegerField()
    message = serializers.CharField()


class JobResponse(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    task = serializers.CharField()
    status = serializers.CharField()
    queue = serializers.CharField()
    priority = serializers.CharField()
    progress = ProgressResponse()
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    runtime_seconds = serializers.FloatField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    retry_of = serializers.UUIDField(allow_null=True)


class ErrorResponse(serializers.Serializer):
    """DRF's answer for 403, 404, 409, 410, 413."""

    detail = serializers.CharField()


# DRF's 400: each field (or "detail") with its messages.
VALIDATION_ERROR = OpenApiResponse(OpenApiTypes.OBJECT, description="Each refused field with its messages.")
