"""Dotted names in the README, docstrings, comments and help texts stay
true: each `jobs.x`, `media_tasks.x.y`, ... names a task, a permission, a
model, a module or something in one. A rename that leaves old text behind
fails here (it once left `media_tasks.thumbnail_create` in three places)."""

import importlib
import importlib.util
import io
import re
import tokenize

from celery import current_app
from django.apps import apps
from django.contrib.auth.models import Permission

from jobs.registry import job_tasks
from reports.registry import report_types
from tests.helpers import REPO

PACKAGES = ("config", "jobs", "media_tasks", "mail_tasks", "reports", "ops", "upstream")
DOTTED = re.compile(rf"(?<![\w./:{{-])((?:{'|'.join(PACKAGES)})(?:\.[A-Za-z_]\w*)+)")
TEXTS = ["README.md", "BENCHMARKS.md", *(f"{package}/**/*.py" for package in PACKAGES)]


def _resolves(name: str, tasks: set[str], permissions: set[str]) -> bool:
    if name in tasks or name in permissions:
        return True
    app_label, _, rest = name.partition(".")
    if "." not in rest:
        try:
            apps.get_model(app_label, rest)
            return True
        except LookupError:
            pass
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            # find_spec, not an import, for a module named whole: importing
            # config.settings.production would check its secrets.
            if importlib.util.find_spec(".".join(parts[:cut])) is None:
                continue
        except ImportError:
            continue
        if cut == len(parts):
            return True
        target = importlib.import_module(".".join(parts[:cut]))
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def _prose(path) -> str:
    """Markdown whole; of Python, the comments and strings (code names its
    own variables, e.g. a queryset called `jobs`), but not dispatch_uids."""
    source = path.read_text()
    if path.suffix != ".py":
        return source
    kept, previous = [], []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT or (
            token.type == tokenize.STRING and [t.string for t in previous[-2:]] != ["dispatch_uid", "="]
        ):
            kept.append(token.string)
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            previous.append(token)
    return "\n".join(kept)


def test_every_dotted_name_in_the_docs_and_code_text_exists(db):
    job_tasks()  # imports every app's tasks
    tasks = set(current_app.tasks) | set(report_types())
    permissions = {
        f"{app_label}.{codename}"
        for app_label, codename in Permission.objects.values_list("content_type__app_label", "codename")
    }
    stale = set()
    for pattern in TEXTS:
        for path in sorted(REPO.glob(pattern)):
            if "migrations" in path.parts:
                continue
            for name in DOTTED.findall(_prose(path)):
                name = name.rstrip(".")
                # A file name written with dots (settings/base.py is not one).
                if name.endswith((".py", ".md", ".txt", ".json", ".yml", ".yaml", ".html", ".toml", ".conf")):
                    continue
                if not _resolves(name, tasks, permissions):
                    stale.add(f"{path.relative_to(REPO)}: {name}")
    assert not stale, "names that no longer exist:\n" + "\n".join(sorted(stale))
