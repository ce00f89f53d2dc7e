from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from media_app.conf import media_settings


class IndexView(TemplateView):
    """The site root: a newcomer opening the server's address learns it runs and where to go."""

    template_name = "mediasite/index.html"

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "server_name": media_settings.SERVER_NAME}

from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

urlpatterns = [
    path("", include("media_app.api.matrix.urls")),
    path("", include("media_app.federation.urls")),
    path("api/v1/", include("media_app.api.v1.urls")),
    # Reports (native API) and the admin media API on Synapse's paths.
    path("", include("media_app.moderation.urls")),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[])),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema", authentication_classes=[], permission_classes=[])),
    path("admin/", admin.site.urls),
    path("", IndexView.as_view(), name="index"),
]

handler400 = "media_app.errors.handler400"
handler403 = "media_app.errors.handler403"
handler404 = "media_app.errors.handler404"
handler500 = "media_app.errors.handler500"
