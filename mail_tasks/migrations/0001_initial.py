import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import mail_tasks.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("jobs", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="RateBucket",
            fields=[
                ("key", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("tat", models.FloatField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="ReceivedEmail",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("received_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("peer", models.CharField(blank=True, max_length=100)),
                ("mail_from", models.CharField(max_length=320)),
                ("rcpt_to", models.JSONField(default=list)),
                ("subject", models.CharField(blank=True, max_length=998)),
                ("message_id", models.CharField(blank=True, db_index=True, max_length=255)),
                ("raw", models.BinaryField()),
            ],
            options={
                "ordering": ["-received_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="Campaign",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=200)),
                (
                    "template",
                    models.CharField(
                        help_text="Folder with subject.txt, body.txt and optionally body.html.", max_length=200
                    ),
                ),
                (
                    "context",
                    models.JSONField(blank=True, default=dict, help_text="Shared by every recipient; theirs wins."),
                ),
                ("from_email", models.CharField(max_length=320)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("running", "Running"),
                            ("paused", "Paused"),
                            ("cancelled", "Cancelled"),
                            ("done", "Done"),
                        ],
                        default="running",
                        max_length=10,
                    ),
                ),
                ("recipients_count", models.PositiveIntegerField(default=0)),
                ("batch_size", models.PositiveIntegerField()),
                ("batches", models.PositiveIntegerField(default=0)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "permissions": [("control_campaign", "Can pause, resume and cancel campaigns")],
            },
        ),
        migrations.CreateModel(
            name="OutboundMessage",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("idempotency_key", models.CharField(max_length=200, unique=True)),
                ("message_id", models.CharField(max_length=255, unique=True)),
                ("batch", models.PositiveIntegerField(blank=True, null=True)),
                ("from_email", models.CharField(max_length=320)),
                ("to", models.CharField(max_length=320)),
                ("template", models.CharField(blank=True, max_length=200)),
                ("context", models.JSONField(blank=True, null=True)),
                ("subject", models.CharField(blank=True, max_length=998)),
                ("body_text", models.TextField(blank=True)),
                ("body_html", models.TextField(blank=True)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("sending", "Sending"),
                            ("sent", "Sent"),
                            ("failed", "Failed"),
                            ("bounced", "Bounced permanently"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="queued",
                        max_length=10,
                    ),
                ),
                (
                    "attempts",
                    models.PositiveIntegerField(default=0, help_text="SMTP attempts whose outcome was recorded."),
                ),
                ("last_error", models.TextField(blank=True)),
                (
                    "smtp_response",
                    models.TextField(blank=True, help_text="The server's last answer, e.g. 250 2.0.0 queued as ..."),
                ),
                ("claimed_by", models.UUIDField(blank=True, help_text="The job sending it now.", null=True)),
                ("claimed_until", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("sent_at", models.DateTimeField(blank=True, null=True)),
                (
                    "campaign",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="mail_tasks.campaign",
                    ),
                ),
                (
                    "job",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="jobs.job",
                    ),
                ),
            ],
            options={
                "ordering": ["-id"],
                "permissions": [("retry_outboundmessage", "Can retry failed messages")],
            },
        ),
        migrations.CreateModel(
            name="OutboundAttachment",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("file", models.FileField(upload_to=mail_tasks.models.attachment_path)),
                ("filename", models.CharField(max_length=255)),
                ("mimetype", models.CharField(blank=True, max_length=100)),
                (
                    "message",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attachments",
                        to="mail_tasks.outboundmessage",
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="outboundmessage",
            index=models.Index(fields=["campaign", "batch", "id"], name="mail_msg_campaign_batch"),
        ),
        migrations.AddIndex(
            model_name="outboundmessage",
            index=models.Index(fields=["campaign", "status"], name="mail_msg_campaign_status"),
        ),
        migrations.AddConstraint(
            model_name="outboundmessage",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("claimed_by__isnull", False), ("status", "sending")),
                    models.Q(("status", "sending"), _negated=True),
                    _connector="OR",
                ),
                name="mail_msg_sending_is_claimed",
            ),
        ),
    ]
