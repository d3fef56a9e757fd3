import os
import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import IntegrityError, transaction

DEFAULT_USERNAME = "admin"


@dataclass(frozen=True)
class AdminAccount:
    username: str
    created: bool
    # Set only when this call invented the password: it is shown once, then
    # exists nowhere but as a hash.
    generated_password: str | None = None


def admin_ensure(*, username: str | None = None, password: str | None = None) -> AdminAccount:
    """Make sure a superuser exists to log in to the admin with.

    The username and password come from the arguments, else from
    DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD (the variables
    Django's createsuperuser reads). An existing user is left as it is: a
    password changed in the admin is never reset. Without a username, any
    active superuser will do; if there is none, `admin` is created, with a
    random password unless one was given.
    """
    User = get_user_model()
    users = User._default_manager
    username = username or os.environ.get("DJANGO_SUPERUSER_USERNAME") or None
    password = password or os.environ.get("DJANGO_SUPERUSER_PASSWORD") or None
    if username is None:
        existing = users.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if existing is not None:
            return AdminAccount(username=existing.get_username(), created=False)
        username = DEFAULT_USERNAME
    if users.filter(**{User.USERNAME_FIELD: username}).exists():
        return AdminAccount(username=username, created=False)
    generated = None if password else secrets.token_urlsafe(12)
    try:
        with transaction.atomic():
            users.create_superuser(**{User.USERNAME_FIELD: username}, email="", password=password or generated)
    except IntegrityError:  # created by another process since the check
        return AdminAccount(username=username, created=False)
    return AdminAccount(username=username, created=True, generated_password=generated)


class Command(BaseCommand):
    help = (
        "Make sure an admin superuser exists "
        "(DJANGO_SUPERUSER_USERNAME / _PASSWORD, else `admin` with a random password)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--username",
            help="Username (default: DJANGO_SUPERUSER_USERNAME, else any superuser, else admin). "
            "The password is only ever read from DJANGO_SUPERUSER_PASSWORD, never from the command line.",
        )

    def handle(self, *args, **options):
        account = admin_ensure(username=options["username"])
        self.stdout.write(describe_account(account))


def describe_account(account: AdminAccount) -> str:
    if account.generated_password:
        return (
            f"Created superuser {account.username!r} with password {account.generated_password!r}. "
            "It is shown only this once: change it in the admin."
        )
    if account.created:
        return f"Created superuser {account.username!r} with the password in DJANGO_SUPERUSER_PASSWORD."
    return f"User {account.username!r} exists; its password is unchanged."
