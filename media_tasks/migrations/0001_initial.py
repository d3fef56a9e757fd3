import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import media_tasks.models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("jobs", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ImageBatch",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
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
            ],
            options={
                "verbose_name_plural": "image batches",
                "ordering": ["-created_at"],
            },
        ),
        migrations.CreateModel(
            name="Image",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("original", models.FileField(max_length=255, storage=media_tasks.models.media_storage, upload_to="")),
                (
                    "original_name",
                    models.CharField(blank=True, help_text="As uploaded; shown, never used as a path.", max_length=255),
                ),
                ("original_bytes", models.PositiveBigIntegerField(default=0)),
                ("options", models.JSONField(blank=True, default=dict)),
                ("format", models.CharField(blank=True, max_length=10)),
                ("width", models.PositiveIntegerField(blank=True, null=True)),
                ("height", models.PositiveIntegerField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
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
                    "batch",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="images",
                        to="media_tasks.imagebatch",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
            },
        ),
        migrations.CreateModel(
            name="Rendition",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50)),
                ("file", models.FileField(max_length=255, storage=media_tasks.models.media_storage, upload_to="")),
                ("format", models.CharField(max_length=10)),
                ("width", models.PositiveIntegerField()),
                ("height", models.PositiveIntegerField()),
                ("bytes", models.PositiveIntegerField()),
                ("made_at", models.DateTimeField()),
                (
                    "image",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="renditions", to="media_tasks.image"
                    ),
                ),
            ],
            options={
                "ordering": ["image", "-width"],
                "constraints": [models.UniqueConstraint(fields=("image", "name"), name="rendition_one_per_name")],
            },
        ),
    ]
