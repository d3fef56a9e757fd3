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
# Nothing under MEDIA_ROOT is served as such, in DEBUG or not: originals
# (with their EXIF) and renditions go through an authorised view
# (media_tasks.api.ImageFileDownload), mail attachments nowhere.
