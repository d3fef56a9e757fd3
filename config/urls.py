from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("jobs.urls")),
    path("", include("ops.urls")),
    path("api/", include("media_tasks.urls")),
    path("api/", include("reports.urls")),
    path("", include("mail_tasks.urls")),
]
# Uploaded originals and renditions under `make run`; in production the web
# server or the storage backend serves them (static() is a no-op there).
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
