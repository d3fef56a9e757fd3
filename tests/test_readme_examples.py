"""Every shell example of README.md and reports/README.md that talks to the
stack (http://127.0.0.1:8000) runs, as written and in order, against a live
`manage.py up` on the embedded default, and does what the README says it
does: the READMEs cannot drift from the code."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from jobs.filesystem_broker import queue_of
from tests.embedded_stack import Up, first_run_env, jobs_rows
from tests.helpers import REPO, free_port, wait_for

pytestmark = pytest.mark.integration

README_URL = "http://127.0.0.1:8000"
FINISHED = ("SUCCESS", "FAILURE", "DEAD", "LOST", "REVOKED")
# Each request fails the script on an HTTP error, and its answer ends with a
# newline, without changing a character of the examples themselves. A curl
# that asks for -f/--fail itself (the README's download loop) keeps it; one
# that writes out its status code (-w, the bad-input example) shows an error
# status instead of failing on it.
PREAMBLE = """\
set -euo pipefail
curl() {
  local fail=--fail-with-body
  for argument in "$@"; do case "$argument" in -f*|--fail*|-w*|--write-out*) fail= ;; esac; done
  command curl -sS $fail "$@" && echo
}
"""


def readme_examples(readme: Path) -> list[str]:
    blocks = re.findall(r"^```sh\n(.*?)^```", readme.read_text(), flags=re.DOTALL | re.MULTILINE)
    return [block for block in blocks if README_URL in block]


def test_the_readmes_have_runnable_examples_for_jobs_images_email_and_reports():
    examples = "\n".join(readme_examples(REPO / "README.md"))
    for endpoint in ("/api/jobs/", "/api/jobs/bulk/", "/api/images/", "/api/mail/messages/", "/api/reports/"):
        assert f"{README_URL}{endpoint}" in examples
    assert f"{README_URL}/api/reports/" in "\n".join(readme_examples(REPO / "reports" / "README.md"))


@pytest.fixture
def first_run(tmp_path):
    yield from first_run_env(tmp_path)


def test_every_readme_example_works_against_a_live_stack(first_run, tmp_path):
    var_dir, env = first_run
    up = Up(env, port=free_port(), flower_port=free_port(), extra_args=("--noreload",)).start()
    # The examples run from a checkout (.venv/bin/python manage.py) and save
    # downloads where they run: a folder of their own that looks like one.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("manage.py", ".venv"):
        (checkout / name).symlink_to(REPO / name)
    # reports/README.md's examples go on with the main README's $TOKEN, in a
    # folder of their own: its download has the name of one made above.
    script = "\n".join(
        [
            PREAMBLE,
            *readme_examples(REPO / "README.md"),
            "mkdir reports-readme && cd reports-readme",
            *readme_examples(REPO / "reports" / "README.md"),
        ]
    ).replace(README_URL, up.web)
    try:
        up.wait_for_line(rf"^Ready: {re.escape(up.web)}/admin/$")
        for program in ("worker:general", "worker:heavy", "smtp-sink"):
            up.wait_for_line(rf"^{program}\s*\|")
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=checkout,
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n--- up ---\n{up.output[-3000:]}"

        def all_finished():
            rows = dict(jobs_rows(var_dir, "SELECT status, count(*) FROM jobs_job GROUP BY status"))
            return set(rows) <= set(FINISHED) and rows

        statuses = wait_for(all_finished, timeout=60, interval=0.5, what="every job the examples made to finish")
        # The bad input is refused with a 400 and makes no job; the demo job
        # is cancelled and its retry runs; every other job succeeds.
        assert statuses.get("REVOKED") == 1 and set(statuses) == {"SUCCESS", "REVOKED"}, statuses
        assert '{"args":["jobs.sleep: seconds must be a number from 0 to 30, not -1"]} 400' in done.stdout

        formats = jobs_rows(var_dir, "SELECT DISTINCT format FROM media_tasks_rendition")
        assert ("WEBP",) in formats, formats
        images = jobs_rows(var_dir, "SELECT count(*) FROM media_tasks_image")
        assert images == [(4,)], images  # two single uploads and a batch of two
        subjects = jobs_rows(var_dir, "SELECT subject, rcpt_to FROM mail_tasks_receivedemail ORDER BY id")
        assert subjects == [
            ("News for Ada", '["ada@example.com"]'),
            ("Welcome to the kit, Ada", '["ada@example.org"]'),
        ], subjects
        reports = {path.suffix: path.read_bytes() for path in checkout.glob("jobs-activity-*")}
        assert set(reports) == {".csv", ".xlsx", ".pdf"}, done.stdout
        assert reports[".pdf"].startswith(b"%PDF") and reports[".xlsx"].startswith(b"PK")
        assert reports[".csv"].decode("utf-8-sig").startswith("Period start,Task,Queue,Jobs")
        assert [path.suffix for path in (checkout / "reports-readme").iterdir()] == [".pdf"]
    finally:
        assert up.stop() == 0, up.output[-3000:]
    # No job left behind (a few events for the Flower that stopped may be:
    # the next `up` deletes them).
    assert [
        name for name in os.listdir(var_dir / "broker" / "queue") if not queue_of(name).startswith("celeryev.")
    ] == []
