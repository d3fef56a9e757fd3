import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("kit")
# Every Celery setting lives in Django settings under the CELERY_ prefix
# (config/settings/base.py), next to a one-line reason for its value.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
