import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("task_name", models.CharField(db_index=True, max_length=200)),
                ("args", models.JSONField(blank=True, default=list)),
                ("kwargs", models.JSONField(blank=True, default=dict)),
                (
                    "queue",
                    models.CharField(
                        choices=[
                            ("default", "default"),
                            ("images", "images"),
                            ("email", "email"),
                            ("reports", "reports"),
                        ],
                        max_length=50,
                    ),
                ),
                (
                    "priority",
                    models.CharField(
                        choices=[("high", "high"), ("medium", "medium"), ("low", "low")],
                        default="medium",
                        max_length=10,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("PENDING", "Pending (committed, not yet on the broker)"),
                            ("QUEUED", "Queued"),
                            ("STARTED", "Started"),
                            ("RETRYING", "Retrying"),
                            ("SUCCESS", "Success"),
                            ("FAILURE", "Failure"),
                            ("REVOKED", "Cancelled"),
                            ("DEAD", "Dead (exceeded its delivery limit)"),
                            ("LOST", "Lost (its worker vanished)"),
                        ],
                        default="PENDING",
                        max_length=10,
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("deliveries", models.PositiveSmallIntegerField(default=0)),
                ("progress", models.PositiveSmallIntegerField(default=0, help_text="Percent done, 0-100.")),
                ("progress_message", models.CharField(blank=True, max_length=200)),
                ("error", models.TextField(blank=True, help_text="Why it failed, in one line.")),
                (
                    "unique_key",
                    models.CharField(
                        blank=True,
                        help_text="While a job with this key is active, enqueueing the same key returns it.",
                        max_length=200,
                        null=True,
                    ),
                ),
                ("eta", models.DateTimeField(blank=True, help_text="Not to start before.", null=True)),
                ("worker", models.CharField(blank=True, max_length=200)),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("queued_at", models.DateTimeField(blank=True, null=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "requested_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "retry_of",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="retries",
                        to="jobs.job",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "permissions": [("retry_job", "Can retry jobs"), ("cancel_job", "Can cancel jobs")],
                "indexes": [models.Index(fields=["status", "created_at"], name="job_status_created")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(
                            ("status__in", ("PENDING", "QUEUED", "STARTED", "RETRYING")), ("unique_key__isnull", False)
                        ),
                        fields=("unique_key",),
                        name="job_unique_key_while_active",
                    ),
                    models.CheckConstraint(condition=models.Q(("progress__lte", 100)), name="job_progress_percent"),
                ],
            },
        ),
    ]
