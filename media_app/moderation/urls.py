from django.urls import path

from . import api

_MEDIA = "<str:server_name>/<str:media_id>"
_ADMIN = "_synapse/admin/v1/"

urlpatterns = [
    path(f"api/v1/media/{_MEDIA}/report", api.MediaReportView.as_view()),
    path(f"{_ADMIN}media/quarantine/{_MEDIA}", api.QuarantineMediaView.as_view()),
    path(f"{_ADMIN}media/unquarantine/{_MEDIA}", api.UnquarantineMediaView.as_view()),
    # Before media/<server>/<id>, which these paths would also match.
    path(f"{_ADMIN}media/protect/<str:media_id>", api.ProtectMediaView.as_view()),
    path(f"{_ADMIN}media/unprotect/<str:media_id>", api.UnprotectMediaView.as_view()),
    path(f"{_ADMIN}media/delete", api.DeleteMediaBeforeView.as_view()),
    path(f"{_ADMIN}purge_media_cache", api.PurgeRemoteCacheView.as_view()),
    path(f"{_ADMIN}media/{_MEDIA}", api.MediaAdminView.as_view()),
    path(f"{_ADMIN}user/<str:user_id>/media/quarantine", api.UserMediaQuarantineView.as_view()),
    path(f"{_ADMIN}users/<str:user_id>/media", api.UserMediaListView.as_view()),
]
