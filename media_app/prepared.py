"""Queries compiled once, executed many times: for the two lookups every download makes.

Django compiles a queryset to SQL on every evaluation, and for a one-row primary-key-style lookup
that compilation costs several times the query itself (measured: ~0.9 ms of ORM work against
~0.05 ms in SQLite). A PreparedQuery compiles a `values_list()` queryset once per thread, keeps
the SQL and Django's own result converters (so booleans, datetimes and encrypted fields come back
exactly as the ORM would return them), and then only binds new parameters.
"""
import threading

from django.db import DEFAULT_DB_ALIAS, connections


class _Param:
    """A placeholder value that the compiled SQL must carry through unchanged."""

    def __init__(self, index: int):
        self.index = index


class PreparedQuery:
    def __init__(self, build):
        """`build(*placeholders)` returns a values_list() queryset filtered by exact lookups."""
        self._build = build
        self._local = threading.local()

    def _compile(self, arity: int):
        placeholders = [f"\x00prepared-param-{i}\x00" for i in range(arity)]
        queryset = self._build(*placeholders)
        compiler = queryset.query.get_compiler(DEFAULT_DB_ALIAS)
        sql, params = compiler.as_sql()
        positions = [placeholders.index(p) if p in placeholders else _Param(-1) for p in params]
        if any(isinstance(p, _Param) for p in positions):
            raise ValueError("PreparedQuery supports only exact lookups on the placeholders")
        fields = [s[0] for s in compiler.select[: compiler.col_count]]
        converters = compiler.get_converters(fields)
        return sql, positions, compiler, converters

    def fetchone(self, *args):
        connection = connections[DEFAULT_DB_ALIAS]
        compiled = getattr(self._local, "compiled", None)
        if compiled is None or compiled[0] is not connection:
            compiled = (connection, *self._compile(len(args)))
            self._local.compiled = compiled
        _, sql, positions, compiler, converters = compiled
        with connection.cursor() as cursor:
            cursor.execute(sql, [args[i] for i in positions])
            row = cursor.fetchone()
        if row is not None and converters:
            row = next(iter(compiler.apply_converters([row], converters)))
        return row
