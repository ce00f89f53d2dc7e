"""The one way to write an HTTP endpoint, for every API of this project (Matrix, native REST,
admin, federation).

An endpoint is a subclass of `Endpoint` that declares who may call it (`access`) and defines one
method per HTTP verb. The method parses the request, calls one service and returns either a
Django response (bytes, redirects) or plain data, which is rendered as JSON. Everything else
lives here, once:

- authentication and authorization, chosen by `access`;
- the method check (405 in the one error model; HEAD answered by `get`);
- error rendering: every exception becomes `{"errcode", "error", "code"}` (media_app.errors);
  requests from other homeservers (`answers_server`) get theirs without `code`.

`Endpoint` is a DRF `APIView` so that drf-spectacular can describe it (its class attributes and
`extend_schema` decorators are what the schema is generated from), but it replaces DRF's
request/response machinery with the direct path below: request wrapping, content negotiation,
permission classes and the renderer cost more than the rest of a cached download together, and
every response here is JSON or raw bytes anyway. Views receive the Django `HttpRequest`, with
`request.user` set (None for public endpoints).
"""
import enum
import json

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponseBase, JsonResponse
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from .. import errors, ratelimit
from ..auth import AccessTokenAuthentication, authenticate_request
from ..conf import media_settings
from .schema import MediasiteAutoSchema


class Access(enum.Enum):
    TOKEN = "token"  # any signed-in user (Bearer token or access_token parameter)
    STAFF = "staff"  # a signed-in staff member
    PUBLIC = "public"  # anyone: the key server, federation (signature checked by the view)
    LEGACY = "legacy"  # anyone, and only while MEDIASITE_LEGACY_MEDIA is on


_PERMISSIONS = {
    Access.TOKEN: [IsAuthenticated],
    Access.STAFF: [IsAdminUser],
    Access.PUBLIC: [AllowAny],
    Access.LEGACY: [AllowAny],
}


def json_response(data, status: int = 200, headers: dict | None = None) -> JsonResponse:
    return JsonResponse(data, status=status, safe=False, encoder=DjangoJSONEncoder, headers=headers)


def read_json(request) -> dict:
    """The request body as a JSON object, or BadRequest naming what was expected."""
    raw = request.body
    if not raw:
        return {}
    content_type = request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise errors.UnsupportedContentType(f"{content_type} is not accepted: send application/json")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.BadRequest("Request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise errors.BadRequest("Request body must be a JSON object")
    return data


def drf_request(request) -> Request:
    """A DRF view of the request, for the few helpers that need one (pagination links)."""
    return Request(request, parsers=[])


class Endpoint(APIView):
    access = Access.TOKEN
    # HTTP method -> a group of media_app.ratelimit.GROUPS counted before the handler runs.
    rate_limits: dict[str, str] = {}
    # Called by other homeservers: errors carry the spec's keys only (errors.error_response).
    for_servers = False

    # Read by the schema generator only (see the module docstring); dispatch() below decides.
    authentication_classes = [AccessTokenAuthentication]
    parser_classes = []
    schema = MediasiteAutoSchema()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.permission_classes = _PERMISSIONS[cls.access]
        if cls.access in (Access.PUBLIC, Access.LEGACY):
            cls.authentication_classes = []
        verbs = ("get", "post", "put", "patch", "delete")
        cls.allowed = frozenset(v for v in verbs if callable(getattr(cls, v, None))) | (
            {"head"} if callable(getattr(cls, "get", None)) else set()
        )

    def answers_server(self, request) -> bool:
        """Whether this request comes from another homeserver (its errors then leave out `code`)."""
        return self.for_servers

    def authenticate(self, request):
        """The user making the request, or raise. Federation endpoints check signatures in
        their own views and declare PUBLIC here."""
        if self.access is Access.LEGACY:
            if not media_settings.LEGACY_MEDIA:
                raise errors.Unrecognized()
            return None
        if self.access is Access.PUBLIC:
            return None
        user = authenticate_request(request)
        if self.access is Access.STAFF and not user.is_staff:
            raise errors.Forbidden("This endpoint is for staff only")
        return user

    def dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs, self.request = args, kwargs, request
        try:
            request.user = self.authenticate(request)
            method = request.method.lower()
            if method not in self.allowed:
                # OPTIONS: answered for every route by the CORS middleware (media_app/cors.py).
                raise errors.MethodNotAllowed(allowed=self.allowed | {"options"})
            if method in self.rate_limits:
                ratelimit.request_hit(self.rate_limits[method], request)
            handler = self.get if method == "head" else getattr(self, method)
            result = handler(request, *args, **kwargs)
        except Exception as exc:  # every failure, rendered by the one error model
            return errors.error_response(errors.to_mediasite_error(exc), for_servers=self.answers_server(request))
        if isinstance(result, HttpResponseBase):
            return result
        return json_response(result)
