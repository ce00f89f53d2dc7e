"""Every route refuses an anonymous request unless it is on the explicit public list below.

The test walks Django's URL resolver, so a route added later (by any app) is checked without
editing this file: an `Endpoint` is called with every method it answers and must say 401
M_MISSING_TOKEN (or 404 for the legacy API while it is off); any other Django view must answer
401/403 or send the caller to the admin sign-in page. A route that answers anonymously and is
not on PUBLIC_ROUTES fails the test, as does an Endpoint declared PUBLIC outside that list.
"""
import re
import re._constants as C
import re._parser as sre_parse

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import URLResolver, get_resolver, path as route_path, resolve

from media_app.api.endpoint import Access, Endpoint

# The only routes anyone may call without a token, and why. Paths relative to the site root.
PUBLIC_ROUTES = {
    r"_matrix/key/": "the server's public signing keys (federation)",
    r"_matrix/federation/": "server-to-server API; each view checks the X-Matrix signature",
    r"_matrix/media/v3/(download|thumbnail|config)": "legacy unauthenticated API, only with MEDIASITE_LEGACY_MEDIA",
    r"admin/login/": "the sign-in page",
    r"(accounts/)?login/": "the sign-in page",
    r"static/": "static files",
    r"api/(schema|docs|redoc)/": "the OpenAPI schema and its viewers (no data)",
    r"$": "the site root: says the server runs and links the API docs and the admin (its name only)",
}


def _is_public(path: str) -> bool:
    return any(re.match(pattern, path) for pattern in PUBLIC_ROUTES)


# --- a sample URL for every pattern ------------------------------------------------------

def _sample_in(items) -> str:
    negate = items and items[0][0] is C.NEGATE
    if negate:
        excluded = {chr(av) for op, av in items[1:] if op is C.LITERAL}
        return next(ch for ch in "a1x" if ch not in excluded)
    op, av = items[0]
    if op is C.LITERAL:
        return chr(av)
    if op is C.RANGE:
        return chr(av[0])
    return "1" if av is C.CATEGORY_DIGIT else "a"


def _sample(parsed) -> str:
    out = []
    for op, av in parsed:
        if op is C.LITERAL:
            out.append(chr(av))
        elif op is C.NOT_LITERAL:
            out.append("b" if chr(av) == "a" else "a")
        elif op is C.IN:
            out.append(_sample_in(av))
        elif op is C.ANY:
            out.append("a")
        elif op is C.BRANCH:
            out.append(_sample(av[1][0]))
        elif op is C.SUBPATTERN:
            out.append(_sample(av[3]))
        elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            low, high, sub = av
            out.append(_sample(sub) * max(low, 1 if high else 0))
    return "".join(out)


def _routes(patterns=None, prefix="", route=""):
    for p in get_resolver().url_patterns if patterns is None else patterns:
        part = _sample(sre_parse.parse(p.pattern.regex.pattern))
        if isinstance(p, URLResolver):
            yield from _routes(p.url_patterns, prefix + part, route + str(p.pattern))
        else:
            yield route + str(p.pattern), prefix + part, p.callback


ROUTES = list(_routes())


def _endpoint_class(callback):
    cls = getattr(callback, "view_class", None)
    return cls if isinstance(cls, type) and issubclass(cls, Endpoint) else None


def test_the_walk_finds_every_kind_of_route():
    assert len(ROUTES) > 20
    for route, path, callback in ROUTES:
        assert resolve("/" + path).func is callback, (route, path)


@pytest.mark.django_db
@pytest.mark.parametrize("route,path,callback", ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_refuses_anonymous_callers_unless_public(route, path, callback, client):
    url = "/" + path
    cls = _endpoint_class(callback)
    if cls is not None:
        if cls.access is Access.PUBLIC:
            assert _is_public(path), f"{route} is a PUBLIC Endpoint but not on PUBLIC_ROUTES"
            return
        if cls.access is Access.LEGACY:
            assert _is_public(path), f"{route} is a LEGACY Endpoint but not on PUBLIC_ROUTES"
            with override_settings(MEDIASITE={**settings.MEDIASITE, "LEGACY_MEDIA": False}):
                for method in sorted(cls.allowed):
                    response = getattr(client, method)(url)
                    assert response.status_code == 404, (route, method, response.status_code)
            return
        for method in sorted(cls.allowed):
            response = getattr(client, method)(url)
            assert response.status_code == 401, (route, method, response.status_code)
            if method != "head":
                assert response.json()["errcode"] == "M_MISSING_TOKEN"
        return
    if _is_public(path):
        return
    response = client.get(url, follow=True)
    final = response.resolver_match
    refused = response.status_code in (401, 403) or (
        response.redirect_chain and final is not None and final.url_name == "login"
    )
    assert refused, f"{route} answered an anonymous GET with {response.status_code}"


STAFF_ROUTES = [r for r in ROUTES if (cls := _endpoint_class(r[2])) and cls.access is Access.STAFF]
ADMIN_ROUTES = [r for r in ROUTES if r[0].startswith("admin/") and not _is_public(r[1])]


@pytest.mark.django_db
@pytest.mark.parametrize("route,path,callback", STAFF_ROUTES, ids=[r[0] for r in STAFF_ROUTES])
def test_staff_endpoints_refuse_signed_in_non_staff(route, path, callback, alice_client):
    for method in sorted(_endpoint_class(callback).allowed):
        response = getattr(alice_client, method)("/" + path)
        assert response.status_code == 403, (route, method, response.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("route,path,callback", ADMIN_ROUTES, ids=[r[0] for r in ADMIN_ROUTES])
def test_admin_pages_refuse_signed_in_non_staff(route, path, callback, alice):
    client = Client()
    client.force_login(alice)
    response = client.get("/" + path, follow=True)
    final = response.resolver_match
    assert response.status_code in (401, 403) or (final is not None and final.url_name == "login"), route


# A STAFF endpoint of its own proves the staff check even before any real one exists.
class _StaffProbe(Endpoint):
    access = Access.STAFF

    def get(self, request):
        return {"ok": True}


urlpatterns = [route_path("staff-probe", _StaffProbe.as_view())]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_staff_access_refuses_anonymous_and_non_staff_and_admits_staff(client, alice_client, make_user, client_for):
    assert client.get("/staff-probe").status_code == 401
    assert alice_client.get("/staff-probe").status_code == 403
    assert client_for(make_user("boss", admin=True)).get("/staff-probe").json() == {"ok": True}
