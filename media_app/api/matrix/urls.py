from django.urls import path

from . import views

# Path segments are matched loosely and validated strictly in the services, so a malformed
# server name or media ID gets a clear 400 rather than an unexplained 404.
_MEDIA = "<str:server_name>/<str:media_id>"

urlpatterns = [
    path("_matrix/media/v3/upload", views.UploadView.as_view()),
    path("_matrix/media/v1/create", views.CreateView.as_view()),
    path(f"_matrix/media/v3/upload/{_MEDIA}", views.UploadToReservationView.as_view()),
    path(f"_matrix/client/v1/media/download/{_MEDIA}", views.DownloadView.as_view()),
    path(f"_matrix/client/v1/media/download/{_MEDIA}/<path:file_name>", views.DownloadView.as_view()),
    path(f"_matrix/client/v1/media/thumbnail/{_MEDIA}", views.ThumbnailView.as_view()),
    path("_matrix/client/v1/media/config", views.ConfigView.as_view()),
    path(f"_matrix/media/v3/download/{_MEDIA}", views.LegacyDownloadView.as_view()),
    path(f"_matrix/media/v3/download/{_MEDIA}/<path:file_name>", views.LegacyDownloadView.as_view()),
    path(f"_matrix/media/v3/thumbnail/{_MEDIA}", views.LegacyThumbnailView.as_view()),
    path("_matrix/media/v3/config", views.LegacyConfigView.as_view()),
]
