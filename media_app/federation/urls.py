from django.urls import path

from . import api

urlpatterns = [
    path("_matrix/key/v2/server", api.KeyServerView.as_view()),
    path("_matrix/federation/v1/media/download/<str:media_id>", api.FederationDownloadView.as_view()),
    path("_matrix/federation/v1/media/thumbnail/<str:media_id>", api.FederationThumbnailView.as_view()),
]
