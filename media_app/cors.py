"""CORS for the Matrix APIs, as the spec requires of every homeserver endpoint.

Browser clients (Element Web and the like) fetch media from another origin with an
Authorization header, so every response needs these headers and a preflight OPTIONS must be
answered before any authentication happens.
"""
from django.http import JsonResponse

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Range, If-None-Match, If-Range",
    "Access-Control-Expose-Headers": "Content-Range, Content-Length, Content-Disposition, ETag, Retry-After, Location, Allow",
}
PREFIXES = ("/_matrix/", "/api/v1/")


class MatrixCorsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(PREFIXES):
            return self.get_response(request)
        if request.method == "OPTIONS":
            response = JsonResponse({})
        else:
            response = self.get_response(request)
        for name, value in CORS_HEADERS.items():
            response[name] = value
        return response
