"""Request guards for the admin."""
from . import errors


class AdminNulQueryMiddleware:
    """Refuse a NUL character in an admin page's query string (400 M_INVALID_PARAM).

    The admin builds lookups from its search box and from any list-filter parameter, and
    PostgreSQL text cannot hold NUL: such a value would end as a database error, a 500. The
    APIs validate their own parameters (an upload's file name, for one, loses its control
    characters), so only the admin's paths are guarded: one prefix and one substring test.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info.startswith("/admin/") and "%00" in request.META.get("QUERY_STRING", ""):
            return errors.error_response(errors.InvalidParam("Query parameters must not contain NUL characters"))
        return self.get_response(request)
