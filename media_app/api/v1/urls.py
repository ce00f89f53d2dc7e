from django.urls import path

from . import views

_MEDIA = "<str:server_name>/<str:media_id>"

urlpatterns = [
    path("media", views.MediaCollectionView.as_view()),
    path(f"media/{_MEDIA}", views.MediaDetailView.as_view()),
    path(f"media/{_MEDIA}/content", views.MediaContentView.as_view()),
    path(f"media/{_MEDIA}/thumbnail", views.MediaThumbnailView.as_view()),
    path("me/usage", views.UsageView.as_view()),
    path("tokens", views.TokenCollectionView.as_view()),
    path("tokens/<int:token_id>", views.TokenDetailView.as_view()),
]
