from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the Prometheus endpoint, a health check and the admin
    dashboard. No models: everything is read from the job core's tables, the
    broker and the workers."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self):
        # Registers the workers' `kit_resources` remote-control command.
        from ops import worker_resources  # noqa: F401
