"""Bearer-token authentication for both APIs (header, or the `access_token` query parameter
that the Matrix spec still allows and real clients still send)."""
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from . import errors
from .conf import media_settings
from .services.tokens import PREFIX, token_user


def request_token(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("access_token") or None


def _missing_token_message(request) -> str | None:
    """Why no token was found, when a header was sent: its scheme (Token, Basic) is not Bearer.
    The errcode stays M_MISSING_TOKEN, which Matrix clients act on; only the text says more."""
    scheme = request.META.get("HTTP_AUTHORIZATION", "").strip().partition(" ")[0]
    if scheme and scheme.lower() != "bearer":
        return "The Authorization header must use the Bearer scheme: Authorization: Bearer <token>"
    return None


def user_for_token(token: str, request):
    """The user of a token minted here or, with MEDIASITE_HOMESERVER_URL, of one the homeserver
    vouches for (services.delegated_auth); None if neither knows it. Our own tokens (PREFIX)
    are never shown to the homeserver."""
    user = token_user(token=token)
    if user is None and media_settings.HOMESERVER_URL and not token.startswith(PREFIX):
        from .ratelimit import client_ip
        from .services.delegated_auth import homeserver_user

        user = homeserver_user(token=token, client_ip=client_ip(request))
    return user


def authenticate_request(request):
    """The user behind the request's token, or MissingToken / UnknownToken."""
    token = request_token(request)
    if token is None:
        raise errors.MissingToken(_missing_token_message(request))
    user = user_for_token(token, request)
    if user is None:
        raise errors.UnknownToken()
    return user


class AccessTokenAuthentication(BaseAuthentication):
    def authenticate(self, request):
        token = request_token(request._request)
        if token is None:
            return None  # the permission check then answers M_MISSING_TOKEN
        user = user_for_token(token, request._request)
        if user is None:
            raise AuthenticationFailed()
        return user, None

    def authenticate_header(self, request):
        return 'Bearer realm="mediasite"'
