"""The permission backend: Django's answers, a user's own permissions asked
before their groups'."""

import pytest
from django.contrib.auth.models import Group, Permission

pytestmark = pytest.mark.django_db


@pytest.fixture
def add_job():
    return Permission.objects.get(codename="add_job", content_type__app_label="jobs")


def fresh(user):
    """The user as the next request loads it: no permission cached."""
    return type(user).objects.get(pk=user.pk)


def test_a_users_own_permission_costs_one_query(django_user_model, add_job, django_assert_num_queries):
    user = django_user_model.objects.create_user("own")
    user.user_permissions.add(add_job)
    user = fresh(user)
    with django_assert_num_queries(1):
        assert user.has_perm("jobs.add_job")


def test_a_groups_permission_is_granted_after_the_users_own_are_asked(
    django_user_model, add_job, django_assert_num_queries
):
    group = Group.objects.create(name="submitters")
    group.permissions.add(add_job)
    user = django_user_model.objects.create_user("member")
    user.groups.add(group)
    user = fresh(user)
    with django_assert_num_queries(2):
        assert user.has_perm("jobs.add_job")
    with django_assert_num_queries(0):
        assert user.get_all_permissions() == {"jobs.add_job"}


def test_no_permission_inactive_users_and_objects_are_refused(django_user_model, add_job):
    nobody = django_user_model.objects.create_user("nobody")
    inactive = django_user_model.objects.create_user("inactive", is_active=False)
    inactive.user_permissions.add(add_job)
    holder = django_user_model.objects.create_user("holder")
    holder.user_permissions.add(add_job)

    assert not fresh(nobody).has_perm("jobs.add_job")
    assert not fresh(inactive).has_perm("jobs.add_job")
    assert not fresh(holder).has_perm("jobs.add_job", obj=object())


def test_a_revoked_permission_shows_on_the_next_request(django_user_model, add_job):
    user = django_user_model.objects.create_user("revoked")
    user.user_permissions.add(add_job)
    assert fresh(user).has_perm("jobs.add_job")
    user.user_permissions.remove(add_job)
    assert not fresh(user).has_perm("jobs.add_job")


def test_the_async_check_gives_the_same_answers(django_user_model, add_job):
    from asgiref.sync import async_to_sync

    own = django_user_model.objects.create_user("async-own")
    own.user_permissions.add(add_job)
    nobody = django_user_model.objects.create_user("async-nobody")

    assert async_to_sync(fresh(own).ahas_perm)("jobs.add_job")
    assert not async_to_sync(fresh(nobody).ahas_perm)("jobs.add_job")
