"""A trigram index for the admin's and the API's search (jobs/search.py),
on PostgreSQL only, and `resolved_at`: a failure a person discarded.

The index is built from the same expression the search filters on
(JobSearchText), frozen here: a later change of the search needs a new
migration, or the index goes silently unused (tests/jobs/test_search.py
checks that the planner uses it)."""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

INDEX_NAME = "job_search_trgm"
# jobs.search.JobSearchText, as PostgreSQL reads it: the planner matches an
# expression index by its parsed form, so quoting and spacing may differ.
CREATE_INDEX = f"""
    CREATE INDEX {INDEX_NAME} ON jobs_job USING gin (
        (UPPER(task_name || ' ' || error || ' ' || args::text || ' ' || kwargs::text)) gin_trgm_ops
    )
"""


def add_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE_INDEX)


def remove_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0001_initial")]

    operations = [
        # pg_trgm is a trusted extension (PostgreSQL 13+): the database's
        # owner may create it. A no-op on other databases.
        TrigramExtension(),
        migrations.RunPython(add_index, remove_index),
        migrations.AddField(
            model_name="job",
            name="resolved_at",
            field=models.DateTimeField(
                blank=True,
                null=True,
                help_text="When a person discarded this failure: it leaves the default failure views.",
            ),
        ),
    ]
