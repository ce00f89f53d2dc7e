"""Key rotation for fields encrypted at rest (media_app.crypto)."""
import logging

from django.apps import apps
from django.db import connection, transaction

from .. import crypto

logger = logging.getLogger(__name__)


def _encrypted_columns():
    # Every app's models: the moderation app's reasons are encrypted too.
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if isinstance(field, crypto.EncryptedTextField):
                yield model, field


def _rotated_or_unchanged(token: str, where: str) -> str:
    """A value no key opens stays as it is (and is reported): rotation must not destroy what
    a restored key could still open."""
    try:
        return crypto.rotate(token)
    except crypto.DecryptionError:
        logger.error("Cannot rotate %s: no configured key opens it; left unchanged", where)
        return token


def encrypted_fields_rotate(*, batch_size: int = 500) -> int:
    """Re-encrypt stored tokens with the newest key, reading the raw column (no decryption to
    Python objects), in batches so a large table does not hold one long transaction."""
    rotated = 0
    for model, field in _encrypted_columns():
        table, column, pk = model._meta.db_table, field.column, model._meta.pk.column
        quote = connection.ops.quote_name
        last = None
        while True:
            with transaction.atomic(), connection.cursor() as cursor:
                where = f"WHERE {quote(column)} IS NOT NULL" + (f" AND {quote(pk)} > %s" if last is not None else "")
                cursor.execute(
                    f"SELECT {quote(pk)}, {quote(column)} FROM {quote(table)} {where} ORDER BY {quote(pk)} LIMIT %s",
                    ([last] if last is not None else []) + [batch_size],
                )
                rows = cursor.fetchall()
                for row_pk, token in rows:
                    cursor.execute(
                        f"UPDATE {quote(table)} SET {quote(column)} = %s WHERE {quote(pk)} = %s",
                        [_rotated_or_unchanged(token, f"{table}.{column} row {row_pk}"), row_pk],
                    )
            rotated += len(rows)
            if len(rows) < batch_size:
                break
            last = rows[-1][0]
    return rotated
