from django.urls import path

from mail_tasks import api, views

app_name = "mail_tasks"
urlpatterns = [
    path("api/mail/messages/", api.MessageCollection.as_view(), name="message-list"),
    path("api/mail/campaigns/<int:campaign_id>/", api.CampaignDetail.as_view(), name="campaign-detail"),
    path("mail/sink/", views.sink_list, name="sink-list"),
    path("mail/sink/<int:pk>/", views.sink_detail, name="sink-detail"),
]
