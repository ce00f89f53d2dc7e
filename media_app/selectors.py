"""Read-side queries, kept apart from the services that change state.

The three lookups that every download, cached thumbnail and authenticated request makes are
written here once, as plain SQL through `connection.cursor()`: building and compiling a
queryset for a one-row lookup costs several times the query itself, on every request. The SQL
is generated from the models' own metadata (table and column names) and each row is turned
back into model instances by `Model.from_db`, with the converters Django itself would apply
(SQLite's datetimes and booleans, encrypted fields), so the instances are the ones the ORM
would build. tests/test_selectors.py compares them field by field with the ORM's.
"""
import functools
import threading
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Q

from .models import AccessToken, Blob, Media, MediaStatus, Thumbnail


def media_list_for_user(*, user, media_type: str | None = None, status: str | None = None,
                        since: datetime | None = None):
    """A user's media, newest first. `media_type` is a type (`image/png`) or a family
    (`image/*` or `image`)."""
    queryset = Media.objects.select_related("blob").filter(uploader=user).exclude(status=MediaStatus.DELETED)
    if media_type:
        family = media_type.removesuffix("/*")
        if "/" in family:
            queryset = queryset.filter(media_type=family)
        else:
            queryset = queryset.filter(media_type__startswith=family + "/")
    if status:
        queryset = queryset.filter(status=status)
    if since is not None:
        queryset = queryset.filter(created_ts__gte=since)
    return queryset.order_by("-created_ts", "-pk")


class _Columns:
    """Some concrete columns of one model under a table alias in a hand-written query: the
    SELECT list to put in the SQL, and the way back from a slice of the row to an instance."""

    def __init__(self, model, alias: str, attnames: set[str] | None = None):
        self.model = model
        self.alias = alias
        # Model.from_db() takes the values in the model's field order, so keep that order.
        self.fields = [f for f in model._meta.concrete_fields if attnames is None or f.attname in attnames]
        self.attnames = [f.attname for f in self.fields]
        self._converters = threading.local()

    def __len__(self) -> int:
        return len(self.fields)

    def select_sql(self, quote) -> str:
        return ", ".join(f"{quote(self.alias)}.{quote(f.column)}" for f in self.fields)

    def _converters_for(self, conn) -> list:
        """(position, column, converters) for the columns that need converting on `conn`'s
        database, as the ORM's compiler finds them; once per thread's connection."""
        cached = getattr(self._converters, "value", None)
        if cached is None or cached[0] is not conn:
            converters = []
            for index, field in enumerate(self.fields):
                col = field.get_col(self.alias)
                found = conn.ops.get_db_converters(col) + col.get_db_converters(conn)
                if found:
                    converters.append((index, col, found))
            cached = (conn, converters)
            self._converters.value = cached
        return cached[1]

    def instance(self, row, start: int, conn):
        values = list(row[start:start + len(self.fields)])
        for index, col, converters in self._converters_for(conn):
            for convert in converters:
                values[index] = convert(values[index], col, conn)
        return self.model.from_db(conn.alias, self.attnames, values)


def _fetchone(conn, sql_for, params):
    with conn.cursor() as cursor:
        cursor.execute(sql_for(conn.vendor), params)
        return cursor.fetchone()


class _Sql:
    """Quoted names for one query: `q.table(Model)`, `q.col("m", Model, "field")`."""

    def __init__(self):
        self.quote = connections[DEFAULT_DB_ALIAS].ops.quote_name

    def table(self, model, alias: str) -> str:
        return f"{self.quote(model._meta.db_table)} {self.quote(alias)}"

    def col(self, alias: str, model, name: str) -> str:
        return f"{self.quote(alias)}.{self.quote(model._meta.get_field(name).column)}"


# --- the media row with its blob (every download and thumbnail request) ------------------------

_MEDIA = _Columns(Media, "m")
_MEDIA_BLOB = _Columns(Blob, "b")


@functools.cache
def _media_sql(vendor: str) -> str:
    q = _Sql()
    return (
        f"SELECT {_MEDIA.select_sql(q.quote)}, {_MEDIA_BLOB.select_sql(q.quote)} "
        f"FROM {q.table(Media, 'm')} LEFT JOIN {q.table(Blob, 'b')} "
        f"ON {q.col('b', Blob, 'id')} = {q.col('m', Media, 'blob')} "
        f"WHERE {q.col('m', Media, 'server_name')} = %s AND {q.col('m', Media, 'media_id')} = %s LIMIT 1"
    )


def media_with_blob(*, server_name: str, media_id: str) -> Media | None:
    """The media row with its blob attached (`media.blob` is None while there is none), in one query."""
    conn = connections[DEFAULT_DB_ALIAS]
    row = _fetchone(conn, _media_sql, [server_name, media_id])
    if row is None:
        return None
    media = _MEDIA.instance(row, 0, conn)
    media.blob = _MEDIA_BLOB.instance(row, len(_MEDIA), conn) if media.blob_id is not None else None
    return media


# --- a cached thumbnail with its blob (every thumbnail request) --------------------------------

_THUMB = _Columns(Thumbnail, "t")
_THUMB_BLOB = _Columns(Blob, "b")


@functools.cache
def _thumbnail_sql(vendor: str) -> str:
    q = _Sql()
    return (
        f"SELECT {_THUMB.select_sql(q.quote)}, {_THUMB_BLOB.select_sql(q.quote)} "
        f"FROM {q.table(Thumbnail, 't')} INNER JOIN {q.table(Blob, 'b')} "
        f"ON {q.col('b', Blob, 'id')} = {q.col('t', Thumbnail, 'blob')} "
        f"WHERE {q.col('t', Thumbnail, 'source')} = %s AND {q.col('t', Thumbnail, 'width')} = %s "
        f"AND {q.col('t', Thumbnail, 'height')} = %s AND {q.col('t', Thumbnail, 'method')} = %s "
        f"AND {q.col('t', Thumbnail, 'animated')} = %s LIMIT 1"
    )


def thumbnail_cached(*, source_id: int, width: int, height: int, method: str, animated: bool) -> Thumbnail | None:
    """The stored rendition of a source blob for this box, with its own blob attached, or None."""
    conn = connections[DEFAULT_DB_ALIAS]
    row = _fetchone(conn, _thumbnail_sql, [source_id, width, height, method, animated])
    if row is None:
        return None
    thumb = _THUMB.instance(row, 0, conn)
    thumb.blob = _THUMB_BLOB.instance(row, len(_THUMB), conn)
    return thumb


# --- the token and the user behind it (every authenticated request) ---------------------------

# The token's own columns that authentication reads: its id and when it was last used, so the
# request records a use only when the last one is older than the precision interval.
_TOKEN = _Columns(AccessToken, "a", {"id", "user_id", "last_used_ts"})


@functools.cache
def _token_user_columns() -> _Columns:
    # Only what authentication and permissions read; the user's other fields load on access.
    return _Columns(get_user_model(), "u", {"id", "username", "is_active", "is_staff", "is_superuser"})


@functools.cache
def _token_sql(vendor: str) -> str:
    q, user_model = _Sql(), get_user_model()
    return (
        f"SELECT {_TOKEN.select_sql(q.quote)}, {_token_user_columns().select_sql(q.quote)} "
        f"FROM {q.table(AccessToken, 'a')} INNER JOIN {q.table(user_model, 'u')} "
        f"ON {q.col('u', user_model, user_model._meta.pk.name)} = {q.col('a', AccessToken, 'user')} "
        f"WHERE {q.col('a', AccessToken, 'token_hash')} = %s LIMIT 1"
    )


def token_with_user(*, token_hash: str) -> AccessToken | None:
    """The access token with this hash (only its id, user and last use loaded), with the user
    it belongs to, active or not, attached as `token.user`; or None."""
    conn = connections[DEFAULT_DB_ALIAS]
    row = _fetchone(conn, _token_sql, [token_hash])
    if row is None:
        return None
    token = _TOKEN.instance(row, 0, conn)
    token.user = _token_user_columns().instance(row, len(_TOKEN), conn)
    return token


def user_for_token_hash(*, token_hash: str):
    """The user an access token (by its hash) belongs to, active or not, or None."""
    token = token_with_user(token_hash=token_hash)
    return None if token is None else token.user


# --- whether content is quarantined (every first fetch of remote media) -----------------------

@functools.cache
def _quarantined_sql(vendor: str) -> str:
    from .moderation.models import QuarantinedContent

    q = _Sql()
    return (
        f"SELECT 1 FROM {q.table(QuarantinedContent, 'q')} WHERE {q.col('q', QuarantinedContent, 'sha256')} = %s "
        f"UNION ALL SELECT 1 FROM {q.table(Blob, 'b')} "
        f"WHERE {q.col('b', Blob, 'sha256')} = %s AND {q.col('b', Blob, 'quarantined')} LIMIT 1"
    )


def content_quarantined(*, sha256: str) -> bool:
    """Whether these bytes are under hash-level quarantine: a QuarantinedContent row (which
    outlives the bytes) or a quarantined Blob."""
    return _fetchone(connections[DEFAULT_DB_ALIAS], _quarantined_sql, [sha256, sha256]) is not None


@functools.cache
def _quarantined_size_sql(vendor: str) -> str:
    from .moderation.models import QuarantinedContent

    q = _Sql()
    size = q.col('q', QuarantinedContent, 'size')
    return (
        f"SELECT 1 FROM {q.table(QuarantinedContent, 'q')} WHERE {size} BETWEEN %s AND %s OR {size} IS NULL "
        f"UNION ALL SELECT 1 FROM {q.table(Blob, 'b')} "
        f"WHERE {q.col('b', Blob, 'size')} BETWEEN %s AND %s AND {q.col('b', Blob, 'quarantined')} LIMIT 1"
    )


def quarantined_content_of_size(*, low: int, high: int) -> bool:
    """Whether any content under hash-level quarantine is (or, for a row of unknown size, may
    be) between `low` and `high` bytes long: bytes of any other length cannot be quarantined
    content."""
    return _fetchone(connections[DEFAULT_DB_ALIAS], _quarantined_size_sql, [low, high, low, high]) is not None


def unused_since(before: datetime) -> Q:
    """Rows (media, thumbnails) not used since `before`: last accessed before it or, never
    accessed, made before it (cached, uploaded, rendered)."""
    return Q(last_access_ts__lt=before) | Q(last_access_ts__isnull=True, created_ts__lt=before)
