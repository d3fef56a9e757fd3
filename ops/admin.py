"""Puts the operations dashboard into the admin: a URL under /admin/ops/,
behind the admin's login, and an "Operations" entry at the top of the
index and the sidebar.

ops has no models, so nothing is registered; the default site's get_urls
and get_app_list are wrapped instead of overriding admin templates that
other apps may also want to override.
"""

from django.contrib import admin
from django.urls import path, reverse

from ops.dashboard import PERMISSION, dashboard_view

URL_NAME = "ops_dashboard"


def install(site: admin.AdminSite) -> None:
    get_urls = site.get_urls
    get_app_list = site.get_app_list

    def get_urls_with_dashboard():
        dashboard = path("ops/dashboard/", site.admin_view(dashboard_view(site)), name=URL_NAME)
        return [dashboard, *get_urls()]

    def get_app_list_with_dashboard(request, app_label=None):
        apps = get_app_list(request, app_label)
        if app_label is None and request.user.has_perm(PERMISSION):
            url = reverse(f"{site.name}:{URL_NAME}")
            entry = {
                "name": "Dashboard",
                "object_name": "Dashboard",
                "admin_url": url,
                "add_url": None,
                "view_only": True,
                "perms": {"view": True},
            }
            apps.insert(
                0,
                {"name": "Operations", "app_label": "ops", "app_url": url, "has_module_perms": True, "models": [entry]},
            )
        return apps

    site.get_urls = get_urls_with_dashboard
    site.get_app_list = get_app_list_with_dashboard


install(admin.site)
