from django.apps import AppConfig


class TestAppConfig(AppConfig):
    """Tasks that exist only for the test suite (installed by
    config.settings.test): crashes, flaky failures, slow work."""

    name = "tests.testapp"
    label = "testapp"
