"""The image API's shapes for its OpenAPI schema (drf-spectacular): the
views answer with plain dicts (media_tasks.api's *_representation), which
no serializer describes on its own. Documentation only."""

from rest_framework import serializers

from jobs.schema import JobResponse, ProgressResponse


class RenditionResponse(serializers.Serializer):
    name = serializers.CharField()
    url = serializers.URLField()
    format = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    bytes = serializers.IntegerField()


class ImageResponse(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    original_name = serializers.CharField()
    original_bytes = serializers.IntegerField()
    batch = serializers.URLField(allow_null=True)
    status = serializers.CharField(help_text="Its job's status (PENDING before the job exists).")
    progress = ProgressResponse()
    error = serializers.CharField(allow_null=True)
    job = JobResponse(allow_null=True)
    format = serializers.CharField(allow_null=True)
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    renditions = RenditionResponse(many=True)
    created_at = serializers.DateTimeField()


class ImageListResponse(serializers.Serializer):
    results = ImageResponse(many=True, help_text="The newest 100 images the caller may see.")


class BatchImageResponse(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    original_name = serializers.CharField()
    status = serializers.CharField()
    error = serializers.CharField(allow_null=True)


class BatchResponse(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    status = serializers.CharField()
    progress = ProgressResponse()
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Images per job status.")
    total = serializers.IntegerField()
    images = BatchImageResponse(many=True)
    created_at = serializers.DateTimeField()
