"""Oversized and malformed requests to every endpoint that enqueues work:
a 4xx that says what is wrong, and not a single Job row (nothing to publish).
The single-app cases live in tests/*/test_api.py and
tests/media_tasks/test_hostile_files.py; this is the cross-cutting sweep,
made by a superuser, so no refusal is a mere permission check."""

import json

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from jobs.models import Job

pytestmark = pytest.mark.django_db

TOO_BIG = 2 * 1024 * 1024  # over DATA_UPLOAD_MAX_MEMORY_SIZE (1 MiB)


@pytest.fixture
def api(db) -> APIClient:
    client = APIClient()
    client.force_authenticate(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def refused(response, status: int, *fragments: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:500])
    text = json.dumps(response.json()) if response.get("Content-Type", "").startswith("application/json") else ""
    for fragment in fragments:
        assert fragment.lower() in text.lower(), text
    assert not Job.objects.exists(), "a refused request enqueued a job"


def post_raw(api, url, body: str, content_type="application/json"):
    return api.generic("POST", url, body, content_type=content_type)


JSON_ENDPOINTS = ["/api/jobs/", "/api/mail/messages/", "/api/reports/"]


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
def test_a_json_body_that_does_not_parse_is_a_400_that_says_so(api, url):
    refused(post_raw(api, url, '{"task": "jobs.noop",'), 400, "JSON parse error")


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
def test_a_body_that_is_not_json_at_all_is_a_415_that_says_so(api, url):
    refused(post_raw(api, url, "task=jobs.noop", content_type="text/plain"), 415, "Unsupported media type")


@pytest.mark.parametrize("url", JSON_ENDPOINTS)
def test_a_json_array_instead_of_an_object_is_a_400(api, url):
    refused(post_raw(api, url, "[1, 2, 3]"), 400)


def test_an_oversized_job_request_is_a_413_that_names_the_limit(api):
    body = json.dumps({"task": "jobs.noop", "args": ["x" * TOO_BIG]})
    refused(post_raw(api, "/api/jobs/", body), 413, "the limit is 1048576")


OVERSIZED = json.dumps(
    {
        "template": "mail_tasks/welcome",
        "to": "a@example.com",
        "type": "jobs.export",
        "format": "csv",
        "context": {"x": "y" * TOO_BIG},
        "params": {"x": "y" * TOO_BIG},
    }
)


@pytest.mark.parametrize("url", ["/api/mail/messages/", "/api/reports/"])
def test_an_oversized_email_or_report_request_is_refused_with_a_4xx(api, url):
    response = post_raw(api, url, OVERSIZED)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert not Job.objects.exists()


@pytest.mark.parametrize("url", ["/api/mail/messages/", "/api/reports/"])
def test_an_oversized_email_or_report_request_is_a_413_that_names_the_limit(api, url):
    refused(post_raw(api, url, OVERSIZED), 413, "limit")


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"task": "os.system", "args": ["rm -rf /"]}, "Unknown task 'os.system'"),
        ({"task": "testapp.bad_input", "args": ["x"]}, "Unknown task"),  # not public
        ({"task": "jobs.sleep", "args": [1, 2, 3, 4]}, "too many positional arguments"),
        ({"task": "jobs.sleep", "kwargs": {"shell": True}}, "unexpected keyword argument 'shell'"),
        ({"task": "jobs.noop", "priority": "urgent"}, "not a valid choice"),
        ({"task": "jobs.noop", "countdown": -5}, "greater than or equal to 0"),
        ({"task": "jobs.noop", "countdown": 10**9}, "less than or equal to"),
        ({"task": "jobs.noop", "args": "not-a-list"}, "Expected a list"),
        ({"task": "jobs.noop", "unique_key": "k" * 201}, "no more than 200 characters"),
        ({"args": []}, "This field is required"),
    ],
)
def test_a_malformed_job_request_is_a_400_with_the_reason(api, body, fragment):
    refused(post_raw(api, "/api/jobs/", json.dumps(body)), 400, fragment)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"template": "../../etc/passwd", "to": "a@example.com"}, "template"),
        ({"template": "mail_tasks/welcome"}, "This field is required"),
        ({"template": "mail_tasks/welcome", "to": "a@example.com", "priority": "urgent"}, "not a valid choice"),
        ({"template": "mail_tasks/welcome", "to": "a@example.com", "context": ["not", "a", "dict"]}, "dictionary"),
        ({"template": "mail_tasks/welcome", "to": "a@example.com\r\nBcc: victim@example.com"}, "line break"),
    ],
)
def test_a_malformed_email_request_is_a_400_with_the_reason(api, body, fragment):
    refused(post_raw(api, "/api/mail/messages/", json.dumps(body)), 400, fragment)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"type": "no.such.report", "format": "csv"}, "no.such.report"),
        ({"type": "jobs.export", "format": "exe"}, "not a valid choice"),
        ({"format": "csv"}, "This field is required"),
        ({"type": "jobs.export", "format": "csv", "email_to": "a@example.com"}, "Expected a list"),
        ({"type": "jobs.export", "format": "csv", "email_to": ["x@example.com"] * 1000}, "no more than"),
    ],
)
def test_a_malformed_report_request_is_a_400_with_the_reason(api, body, fragment):
    refused(post_raw(api, "/api/reports/", json.dumps(body)), 400, fragment)


def test_an_upload_over_the_size_limit_is_a_413_that_names_the_limit(api, settings):
    settings.MEDIA_TASKS_MAX_UPLOAD_BYTES = 10_000
    upload = SimpleUploadedFile("big.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50_000, content_type="image/png")
    refused(api.post("/api/images/", {"file": upload}, format="multipart"), 413, "10,000 bytes")


def png() -> SimpleUploadedFile:
    # A file's content is checked by the worker, under its time limits
    # (media_tasks.services.image_upload); the request checks the rest.
    return SimpleUploadedFile("x.png", b"\x89PNG\r\n\x1a\n", content_type="image/png")


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({}, "exactly one file"),
        ({"quality": "500"}, "less than or equal to 95"),
        ({"format": "EXE"}, "not a valid choice"),
        ({"watermark_text": "w", "watermark_position": "../../"}, "not a valid choice"),
        ({"watermark_text": "w" * 10_000}, "no more than"),
    ],
)
def test_a_malformed_upload_is_a_400_with_the_reason(api, fields, fragment):
    body = {**fields, "file": png()} if fields else {}
    refused(api.post("/api/images/", body, format="multipart"), 400, fragment)


def test_two_files_where_one_is_expected_is_a_400(api):
    refused(api.post("/api/images/", {"file": [png(), png()]}, format="multipart"), 400, "exactly one file")


def test_an_image_sent_as_json_is_a_415(api):
    refused(post_raw(api, "/api/images/", '{"file": "aGVsbG8="}'), 415, "Unsupported media type")


# -- Values PostgreSQL cannot store: a 400 naming the field, nothing stored ----

BASE_BODIES = {
    "/api/jobs/": ({"task": "jobs.noop"}, "args"),
    "/api/jobs/bulk/": ({"task": "jobs.noop", "calls": [{}]}, "calls"),
    "/api/mail/messages/": ({"template": "mail_tasks/welcome", "to": "a@example.com"}, "context"),
    "/api/reports/": ({"type": "jobs.export", "format": "csv"}, "params"),
}
# Raw JSON fragments, placed where each endpoint takes free-form values.
HOSTILE_VALUES = {
    "NUL character": ('"a\\u0000b"', "NUL"),
    "lone surrogate": ('"\\ud800"', "surrogate"),
    "number too large": ("1e400", "finite"),
    "negative infinity": ("-1e999", "finite"),
    "NaN": ("NaN", "NaN"),
    "deep nesting": ("[" * 5000 + "]" * 5000, "nested"),
    "moderately deep nesting": ("[" * 40 + "]" * 40, "nested"),
}


def _with_hostile(url: str, fragment: str) -> tuple[str, str]:
    """The endpoint's valid body with `fragment` inside its free-form field;
    (body, the field's name)."""
    body, field = BASE_BODIES[url]
    marker = '"__HOSTILE__"'
    if field == "args":
        placed = {**body, "args": ["__HOSTILE__"]}
    elif field == "calls":
        placed = {**body, "calls": [{"kwargs": {"x": "__HOSTILE__"}}]}
    else:
        placed = {**body, field: {"x": "__HOSTILE__"}}
    return json.dumps(placed).replace(marker, fragment), field


@pytest.mark.parametrize("url", list(BASE_BODIES))
@pytest.mark.parametrize("what", list(HOSTILE_VALUES))
def test_a_value_that_cannot_be_stored_is_a_400_naming_the_field(api, url, what):
    from mail_tasks.models import OutboundMessage
    from reports.models import ReportRun

    fragment, reason = HOSTILE_VALUES[what]
    body, field = _with_hostile(url, fragment)

    response = post_raw(api, url, body)

    refused(response, 400, reason)
    if reason not in ("NaN", "nested") or what == "moderately deep nesting":
        assert field in json.dumps(response.json()), response.json()
    assert not OutboundMessage.objects.exists()
    assert not ReportRun.objects.exists()


@pytest.mark.parametrize(
    "key",
    ["a\u0000b", "\ud800x"],
    ids=["NUL", "surrogate"],
)
def test_a_hostile_unique_key_or_task_name_is_a_400(api, key):
    refused(post_raw(api, "/api/jobs/", json.dumps({"task": "jobs.noop", "unique_key": key})), 400, "unique_key")
    refused(post_raw(api, "/api/jobs/", json.dumps({"task": key})), 400, "task")


# Raw query strings, as a client sends them (percent-encoded bytes).
HOSTILE_QUERIES = {
    "NUL in q": "q=a%00b",
    "surrogate bytes in q": "q=%ED%A0%80",
    "invalid UTF-8 in q": "q=%FF%FE",
    "NUL in task": "task=jobs.noop%00",
    "NUL in a time": "created_after=2026-01-01T00:00:00%00Z",
    "long q": "q=" + "x" * 5000,
}


@pytest.mark.parametrize("query", list(HOSTILE_QUERIES))
@pytest.mark.parametrize(
    "url", ["/api/jobs/", "/api/images/", "/admin/jobs/job/", "/admin/mail_tasks/outboundmessage/"]
)
def test_hostile_query_parameters_are_never_a_500(api, admin_client, url, query):
    client = admin_client if url.startswith("/admin/") else api
    response = client.get(f"{url}?{HOSTILE_QUERIES[query]}")

    assert response.status_code < 500, (response.status_code, response.content[:300])
    if response.status_code == 400 and url.startswith("/api/"):
        name = HOSTILE_QUERIES[query].partition("=")[0]
        assert name in response.json(), response.json()


@pytest.mark.parametrize(
    "address",
    ["a@example.com\r\nBcc: b@example.com", "a\x0b@example.com", "\x1b[2Ja@example.com", "a" * 990 + "@example.com"],
    ids=["CRLF", "VT", "ESC", "too long"],
)
def test_a_report_recipient_that_would_reach_a_header_hostile_is_a_400(api, address):
    from reports.models import ReportRun

    body = {"type": "jobs.export", "format": "csv", "email_to": [address]}
    refused(post_raw(api, "/api/reports/", json.dumps(body)), 400, "email_to")
    assert not ReportRun.objects.exists()


WRONG_TYPES = [None, True, 0, -1, 1e308, "", "x" * 10_000, [], {}, [[]], {"a": {}}]


@pytest.mark.parametrize("url", list(BASE_BODIES))
def test_every_field_of_every_json_endpoint_takes_any_wrong_type_with_a_4xx_and_stores_nothing(api, url):
    from mail_tasks.models import OutboundMessage
    from reports.models import ReportRun

    body, _ = BASE_BODIES[url]
    fields = {
        "/api/jobs/": ["task", "args", "kwargs", "priority", "countdown", "unique_key"],
        "/api/jobs/bulk/": ["task", "calls", "priority"],
        "/api/mail/messages/": ["template", "to", "context", "idempotency_key", "priority"],
        "/api/reports/": ["type", "format", "params", "email_to"],
    }[url]
    for field in fields:
        for value in WRONG_TYPES:
            response = post_raw(api, url, json.dumps({**body, field: value}))
            assert response.status_code < 500, (field, value, response.status_code, response.content[:300])
            if response.status_code >= 400:
                assert not OutboundMessage.objects.exists() and not ReportRun.objects.exists(), (field, value)
            Job.objects.all().delete()
            OutboundMessage.objects.all().delete()
            ReportRun.objects.all().delete()
