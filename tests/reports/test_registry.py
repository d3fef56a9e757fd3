"""A report type of one's own, declared in a few lines, served in every
format by the same declaration."""

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from reports.params import DateRange, Integer, InvalidParams
from reports.registry import Chart, Column, ReportType, get_report_type, register, report_types
from reports.services import ReportNotAllowed, report_request
from tests.reports.conftest import api, stored
from tests.reports.readers import csv_rows, pdf_text, xlsx_sheets

pytestmark = pytest.mark.django_db


@pytest.fixture
def squares(registered):
    @registered
    class Squares(ReportType):
        name = "tests.squares"
        title = "Squares"
        params = {"up_to": Integer(min_value=1, max_value=1000, default=3)}
        columns = [Column("n", "Number"), Column("square", "Square")]
        charts = [Chart(title="Squares", x="n", series=["square"])]

        def rows(self, params):
            for n in range(1, params["up_to"] + 1):
                yield (n, n * n)

    return Squares


def test_a_custom_report_serves_csv_xlsx_and_pdf_from_one_declaration(generated, squares):
    csv_run = generated("tests.squares", "csv", {"up_to": 4})
    xlsx_run = generated("tests.squares", "xlsx", {"up_to": 4})
    pdf_run = generated("tests.squares", "pdf", {"up_to": 4})

    assert csv_rows(stored(csv_run)) == [["Number", "Square"], ["1", "1"], ["2", "4"], ["3", "9"], ["4", "16"]]
    assert xlsx_sheets(stored(xlsx_run)) == {"Squares": [("Number", "Square"), (1, 1), (2, 4), (3, 9), (4, 16)]}
    text = pdf_text(stored(pdf_run))
    assert "Squares" in text and "up to: 4" in text and "16" in text


def test_a_custom_report_is_asked_for_over_the_api_with_its_parameters_checked(owner, squares):
    accepted = api(owner).post(
        "/api/reports/", {"type": "tests.squares", "format": "csv", "params": {"up_to": 5}}, format="json"
    )
    refused = api(owner).post(
        "/api/reports/", {"type": "tests.squares", "format": "csv", "params": {"up_to": 0}}, format="json"
    )

    assert accepted.status_code == 202
    assert accepted.json()["params"] == {"up_to": 5}
    assert refused.status_code == 400
    assert refused.json() == {"params.up_to": "at least 1"}


def test_a_report_over_a_queryset_of_models_reads_its_declared_columns(generated, registered):
    @registered
    class Users(ReportType):
        name = "tests.users"
        title = "Users"
        params = {"joined": DateRange(max_days=3660)}
        columns = [Column("username"), Column("email", "Address"), Column("joined", source="date_joined")]

        def rows(self, params):
            period = params["joined"]
            return User.objects.filter(date_joined__gte=period.start, date_joined__lt=period.end).order_by("username")

    User.objects.create_user("zoe", "zoe@example.com")

    run = generated("tests.users", "csv")

    header, *rows = csv_rows(stored(run))
    assert header == ["Username", "Address", "Joined"]
    assert [row[:2] for row in rows] == [["olivia", "olivia@example.com"], ["zoe", "zoe@example.com"]]
    assert rows[0][2].startswith(timezone.localdate().isoformat() + "T")


def test_the_built_in_reports_are_registered_at_start_up():
    assert {"jobs.activity", "jobs.export"} <= set(report_types())
    assert get_report_type("jobs.export").permission == "jobs.view_job"


def test_two_report_types_cannot_share_a_name(squares):
    class Impostor(ReportType):
        name = "tests.squares"
        columns = [Column("x")]

    with pytest.raises(ImproperlyConfigured, match="Two report types are named 'tests.squares'"):
        register(Impostor)


def test_a_report_type_may_require_a_permission_of_its_own(registered, owner):
    @registered
    class Salaries(ReportType):
        name = "tests.salaries"
        title = "Salaries"
        permission = "auth.view_user"
        columns = [Column("name")]

        def rows(self, params):
            return []

    with pytest.raises(ReportNotAllowed, match="needs reports.add_reportrun, auth.view_user"):
        report_request(report_type="tests.salaries", format="csv", owner=owner)


def test_an_unknown_report_type_is_refused_with_the_list_of_known_ones():
    with pytest.raises(InvalidParams) as refused:
        get_report_type("tests.nothing")

    assert "unknown report type 'tests.nothing'; available: " in refused.value.errors["type"]
    assert "jobs.activity" in refused.value.errors["type"]
