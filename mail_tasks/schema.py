"""The email API's shapes for its OpenAPI schema (drf-spectacular): the
views answer with plain dicts, which no serializer describes on its own.
Documentation only."""

from rest_framework import serializers

from jobs.schema import JobResponse


class MessageResponse(serializers.Serializer):
    id = serializers.IntegerField()
    to = serializers.CharField()
    subject = serializers.CharField()
    status = serializers.CharField()
    message_id = serializers.CharField()
    idempotency_key = serializers.CharField(allow_null=True, help_text="As the client sent it.")
    attempts = serializers.IntegerField()
    last_error = serializers.CharField(allow_null=True)
    smtp_response = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)


class MessageQueuedResponse(serializers.Serializer):
    message = MessageResponse()
    job = JobResponse(required=False, help_text="The message's job; absent if it has none.")


class CampaignProgressResponse(serializers.Serializer):
    total = serializers.IntegerField()
    sent = serializers.IntegerField()
    failed = serializers.IntegerField()
    pending = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    percent = serializers.IntegerField()


class CampaignResponse(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    template = serializers.CharField()
    status = serializers.CharField()
    progress = CampaignProgressResponse()
    batches = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
