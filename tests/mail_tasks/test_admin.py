"""Email in the admin: every message with what the server said, retrying
failed ones (one, selected, all of a campaign), campaigns with progress,
pause, resume and cancel, and a campaign started from a CSV upload."""

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobs.models import Job
from mail_tasks import services
from mail_tasks.models import Campaign, CampaignStatus, MessageStatus, OutboundMessage

pytestmark = pytest.mark.django_db

MESSAGES = reverse("admin:mail_tasks_outboundmessage_changelist")
CAMPAIGNS = reverse("admin:mail_tasks_campaign_changelist")
BOUNCE = "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"


def bounced_message() -> OutboundMessage:
    message = services.email_send(template="mail_tasks/welcome", to="gone@example.com")
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=MessageStatus.BOUNCED, attempts=1, last_error=BOUNCE, smtp_response=BOUNCE
    )
    Job.objects.all().delete()
    return message


def staff_with(django_user_model, *codenames):
    user = django_user_model.objects.create_user("operator", password="pw-123456", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="mail_tasks", codename__in=codenames))
    return user


def offered_actions(response) -> list[str]:
    form = response.context["action_form"]
    return [name for name, _ in form.fields["action"].choices] if form else []


def test_the_message_list_shows_recipient_subject_status_attempts_error_and_smtp_response(admin_client):
    bounced_message()

    response = admin_client.get(MESSAGES)

    assert response.status_code == 200
    [row] = response.context["cl"].result_list
    assert (row.to, row.subject, row.status, row.attempts) == (
        "gone@example.com",
        "Welcome to the kit, gone@example.com",
        "bounced",
        1,
    )
    content = response.content.decode()
    for shown in ("gone@example.com", "Welcome to the kit", "Bounced permanently", "550 5.1.1"):
        assert shown in content


def test_retrying_selected_messages_needs_the_retry_permission_and_is_logged(client, django_user_model):
    message = bounced_message()
    viewer = staff_with(django_user_model, "view_outboundmessage")
    client.force_login(viewer)
    assert "retry_selected" not in offered_actions(client.get(MESSAGES))

    viewer.user_permissions.add(Permission.objects.get(codename="retry_outboundmessage"))
    client.force_login(viewer)  # permissions are cached per user object
    response = client.post(MESSAGES, {"action": "retry_selected", "_selected_action": [message.pk]}, follow=True)

    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert Job.objects.get().args == [message.pk]
    assert LogEntry.objects.get(object_id=str(message.pk)).action_flag == CHANGE
    assert "Queued 1 message(s) again." in response.content.decode()


def test_the_retry_button_of_one_failed_message(admin_client):
    message = bounced_message()
    page = admin_client.get(reverse("admin:mail_tasks_outboundmessage_change", args=[message.pk]))
    assert "Retry this message" in page.content.decode()

    response = admin_client.post(reverse("admin:mail_tasks_outboundmessage_retry", args=[message.pk]))

    assert response.status_code == 302
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert Job.objects.filter(task_name="mail_tasks.message_send").count() == 1


def test_a_sent_message_offers_no_retry_and_is_skipped_with_the_reason(admin_client):
    message = bounced_message()
    OutboundMessage.objects.filter(pk=message.pk).update(status=MessageStatus.SENT)

    page = admin_client.get(reverse("admin:mail_tasks_outboundmessage_change", args=[message.pk]))
    response = admin_client.post(MESSAGES, {"action": "retry_selected", "_selected_action": [message.pk]}, follow=True)

    assert "Retry this message" not in page.content.decode()
    assert "Skipped 1 message(s): it was sent." in response.content.decode()
    assert not Job.objects.exists()


def test_campaigns_are_listed_with_their_progress_and_are_paused_resumed_and_cancelled(admin_client):
    campaign = services.campaign_create(
        name="spring", template="mail_tasks/newsletter", recipients=[f"u{i}@example.com" for i in range(4)]
    )
    campaign.messages.filter(to="u0@example.com").update(status=MessageStatus.SENT)

    listing = admin_client.get(CAMPAIGNS).content.decode()
    detail = admin_client.get(reverse("admin:mail_tasks_campaign_change", args=[campaign.pk])).content.decode()
    assert "1 sent, 0 failed, 3 pending" in listing
    assert "1 sent, 0 failed, 3 pending" in detail

    def act(action):
        admin_client.post(CAMPAIGNS, {"action": action, "_selected_action": [campaign.pk]})
        campaign.refresh_from_db()
        return campaign.status

    assert act("pause_selected") == CampaignStatus.PAUSED
    assert act("resume_selected") == CampaignStatus.RUNNING
    assert act("cancel_selected") == CampaignStatus.CANCELLED
    assert LogEntry.objects.filter(object_id=str(campaign.pk), action_flag=CHANGE).count() == 3


def test_steering_campaigns_needs_the_control_permission(client, django_user_model):
    services.campaign_create(name="spring", template="mail_tasks/newsletter", recipients=["a@example.com"])
    client.force_login(staff_with(django_user_model, "view_campaign"))

    actions = offered_actions(client.get(CAMPAIGNS))

    assert not {"pause_selected", "resume_selected", "cancel_selected", "retry_failed_selected"} & set(actions)


def test_all_failed_messages_of_a_campaign_are_retried_at_once(admin_client):
    campaign = services.campaign_create(
        name="spring", template="mail_tasks/newsletter", recipients=[f"u{i}@example.com" for i in range(3)]
    )
    campaign.messages.update(status=MessageStatus.FAILED, last_error="451 try later (gave up after the last retry)")
    Job.objects.all().delete()

    admin_client.post(CAMPAIGNS, {"action": "retry_failed_selected", "_selected_action": [campaign.pk]})

    assert set(campaign.messages.values_list("status", flat=True)) == {MessageStatus.QUEUED}
    assert list(Job.objects.values_list("args", flat=True)) == [[campaign.pk, 0]]


def test_a_campaign_starts_from_a_csv_upload(admin_client):
    assert admin_client.get(reverse("admin:mail_tasks_campaign_add")).status_code == 200
    csv = SimpleUploadedFile(
        "list.csv", b"email,name\nann@example.com,Ann\nbob@example.com,Bob\n", content_type="text/csv"
    )

    response = admin_client.post(
        reverse("admin:mail_tasks_campaign_add"),
        {"name": "from csv", "template": "mail_tasks/newsletter", "recipients": csv},
    )

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.name, campaign.recipients_count) == ("from csv", 2)
    assert LogEntry.objects.get(object_id=str(campaign.pk)).action_flag == ADDITION


def test_a_csv_upload_without_an_email_column_says_so(admin_client):
    csv = SimpleUploadedFile("list.csv", b"mail,name\nann@example.com,Ann\n", content_type="text/csv")

    response = admin_client.post(
        reverse("admin:mail_tasks_campaign_add"),
        {"name": "bad", "template": "mail_tasks/newsletter", "recipients": csv},
    )

    assert response.status_code == 200
    assert "the CSV needs an &#x27;email&#x27; column; its columns are: mail, name" in response.content.decode()
    assert not Campaign.objects.exists()
