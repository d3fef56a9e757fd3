"""The email JSON API, authenticated like jobs/api.py (token or staff
session; nothing for anonymous users).

POST /api/mail/messages/ queues a transactional email (needs
mail_tasks.add_outboundmessage): 202 with the message and its job, Location
the job. GET /api/mail/campaigns/<id>/ is a campaign's progress: your own
campaigns, or any with mail_tasks.view_campaign.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.api import job_representation
from jobs.exceptions import BadInput
from jobs.keys import owner_scoped_key
from jobs.queues import Priority
from jobs.schema import VALIDATION_ERROR, ErrorResponse
from mail_tasks import services
from mail_tasks.models import Campaign, OutboundMessage
from mail_tasks.schema import CampaignResponse, MessageQueuedResponse


class MessageRequest(serializers.Serializer):
    # Template names are folder paths; no dots, so nothing like "../x".
    template = serializers.RegexField(r"^[\w-]+(/[\w-]+)*$", max_length=200)
    to = serializers.CharField(max_length=320, trim_whitespace=False)
    context = serializers.DictField(required=False, default=dict)
    idempotency_key = serializers.CharField(required=False, max_length=200)
    priority = serializers.ChoiceField(
        choices=[p.value for p in Priority], default=services.TRANSACTIONAL_PRIORITY.value
    )


def message_representation(message: OutboundMessage, *, idempotency_key: str | None = None) -> dict:
    # The key as its client sent it: what is stored is scoped (jobs/keys.py).
    return {
        "id": message.pk,
        "to": message.to,
        "subject": message.subject,
        "status": message.status,
        "message_id": message.message_id,
        "idempotency_key": idempotency_key,
        "attempts": message.attempts,
        "last_error": message.last_error or None,
        "smtp_response": message.smtp_response or None,
        "created_at": message.created_at,
        "sent_at": message.sent_at,
    }


class MessageCollection(APIView):
    @extend_schema(
        operation_id="mail_messages_send",
        request=MessageRequest,
        responses={202: MessageQueuedResponse, 400: VALIDATION_ERROR, 403: ErrorResponse},
    )
    def post(self, request: Request) -> Response:
        if not request.user.has_perm("mail_tasks.add_outboundmessage"):
            raise PermissionDenied("Sending email needs the mail_tasks.add_outboundmessage permission.")
        payload = MessageRequest(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            message = services.email_send(
                template=data["template"],
                to=data["to"],
                context=data["context"],
                # Scoped to the caller: never another user's message, never
                # a key the kit uses itself (jobs/keys.py).
                idempotency_key=owner_scoped_key(data.get("idempotency_key"), request.user),
                priority=data["priority"],
                requested_by=request.user,
                record_refusal=False,
            )
        except BadInput as exc:
            raise ValidationError({"detail": str(exc)}) from None
        body = {"message": message_representation(message, idempotency_key=data.get("idempotency_key"))}
        headers = {}
        if message.job is not None:
            body["job"] = job_representation(message.job, request, with_result=False)
            headers["Location"] = body["job"]["url"]
        return Response(body, status=status.HTTP_202_ACCEPTED, headers=headers)


class CampaignDetail(APIView):
    @extend_schema(operation_id="mail_campaigns_detail", responses={200: CampaignResponse, 404: ErrorResponse})
    def get(self, request: Request, campaign_id: int) -> Response:
        campaigns = Campaign.objects.all()
        if not request.user.has_perm("mail_tasks.view_campaign"):
            campaigns = campaigns.filter(created_by=request.user)
        # 404, not 403, for someone else's campaign: ids are not to be probed.
        campaign = campaigns.filter(pk=campaign_id).first()
        if campaign is None:
            raise NotFound("No such campaign.")
        return Response(
            {
                "id": campaign.pk,
                "name": campaign.name,
                "template": campaign.template,
                "status": campaign.status,
                "progress": services.campaign_progress(campaign),
                "batches": campaign.batches,
                "created_at": campaign.created_at,
                "finished_at": campaign.finished_at,
            }
        )
