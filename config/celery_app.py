import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("kit")
# Every Celery setting lives in Django settings under the CELERY_ prefix
# (config/settings/base.py), next to a one-line reason for its value.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Workers touch KIT_WORKER_LIVENESS_FILE from their event loop when it is set
# (a free liveness probe on Kubernetes; ops/worker_liveness.py).
from ops.worker_liveness import LivenessFile  # noqa: E402

app.steps["worker"].add(LivenessFile)
