import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import reports.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("jobs", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ReportRun",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                (
                    "report_type",
                    models.CharField(db_index=True, help_text="A name in reports.registry.", max_length=100),
                ),
                ("params", models.JSONField(blank=True, default=dict)),
                (
                    "format",
                    models.CharField(choices=[("csv", "CSV"), ("xlsx", "Excel (XLSX)"), ("pdf", "PDF")], max_length=4),
                ),
                (
                    "email_to",
                    models.JSONField(blank=True, default=list, help_text="Addresses sent the file once it is ready."),
                ),
                (
                    "file",
                    models.FileField(blank=True, max_length=255, storage=reports.models.report_storage, upload_to=""),
                ),
                ("rows", models.PositiveBigIntegerField(blank=True, null=True)),
                ("size", models.PositiveBigIntegerField(blank=True, help_text="Bytes.", null=True)),
                ("idempotency_key", models.CharField(blank=True, max_length=200, null=True, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("generated_at", models.DateTimeField(blank=True, null=True)),
                ("expires_at", models.DateTimeField(blank=True, db_index=True, null=True)),
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
                (
                    "owner",
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
                "indexes": [models.Index(fields=["owner", "-created_at"], name="reportrun_owner_created")],
            },
        ),
    ]
