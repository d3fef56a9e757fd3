from django.urls import path

from media_tasks import api

app_name = "media_tasks"
urlpatterns = [
    path("images/", api.ImageCollection.as_view(), name="image-list"),
    path("images/<uuid:image_id>/", api.ImageDetail.as_view(), name="image-detail"),
    path("images/<uuid:image_id>/files/<str:name>", api.ImageFileDownload.as_view(), name="image-file"),
    path("images/batches/", api.BatchCollection.as_view(), name="batch-list"),
    path("images/batches/<uuid:batch_id>/", api.BatchDetail.as_view(), name="batch-detail"),
]
