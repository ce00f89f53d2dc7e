"""Presigned S3 GET URLs signed at a chosen instant (AWS Signature Version 4, query form).

Why not botocore's presigner: it always signs at "now", so two requests a second apart get
different URLs and a browser or proxy cache keyed on the URL never hits. Signing at the start
of a time bucket gives every request within the bucket the same URL. Only the signature is
computed here: the endpoint and the addressing style (path or virtual host) come from
botocore's own URL for the object, and tests/storage/test_redirect.py checks that the result
is the URL botocore would sign at the same instant.
"""
import hashlib
import hmac
import time
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit, urlunsplit

from ..conf import media_settings

# SigV4 presigned URLs are valid for at most seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _rfc3986(value: str) -> str:
    return quote(value, safe="-_.~")


def sigv4_presigned_get(*, client, bucket: str, object_name: str, credentials, signed_at: datetime,
                        expires_seconds: int, response_headers: dict[str, str]) -> str:
    """A query-signed GET URL whose every byte is determined by its arguments.

    `credentials` are botocore frozen credentials (access_key, secret_key, token).
    """
    unsigned = urlsplit(client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": object_name}, ExpiresIn=1,
    ))
    region = client.meta.region_name or "us-east-1"
    amz_date = signed_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{credentials.access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires_seconds),
        "X-Amz-SignedHeaders": "host",
        **response_headers,
    }
    if credentials.token:
        params["X-Amz-Security-Token"] = credentials.token
    query = "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in sorted(params.items()))
    canonical_request = "\n".join(
        ["GET", unsigned.path, query, f"host:{unsigned.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signing_key = _sign(_sign(_sign(_sign(f"AWS4{credentials.secret_key}".encode(), amz_date[:8]), region), "s3"),
                        "aws4_request")
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return urlunsplit((unsigned.scheme, unsigned.netloc, unsigned.path, f"{query}&X-Amz-Signature={signature}", ""))


def download_redirect(backend, key: str, *, media_type: str, disposition: str,
                      now: float | None = None) -> tuple[str, int] | None:
    """(presigned URL, seconds it may be cached) for a 307 download redirect, or None when the
    backend cannot presign (local files are served directly).

    Every request within one REDIRECT_URL_BUCKET_SECONDS bucket gets the same URL (signed at
    the bucket's start), so browsers and proxies that cache by URL keep hitting; each URL stays
    valid REDIRECT_URL_MIN_VALIDITY_SECONDS past its bucket's end, so a redirect cached until
    then still works. The backend is told the type and disposition to answer with, since the
    client will never see ours.
    """
    bucket = max(1, media_settings.REDIRECT_URL_BUCKET_SECONDS)
    now = time.time() if now is None else now
    bucket_start = int(now) - int(now) % bucket
    expires = min(bucket + media_settings.REDIRECT_URL_MIN_VALIDITY_SECONDS, MAX_PRESIGN_SECONDS)
    url = backend.presign(
        key,
        signed_at=datetime.fromtimestamp(bucket_start, tz=timezone.utc),
        expires_seconds=expires,
        response_headers={"response-content-type": media_type, "response-content-disposition": disposition},
    )
    if url is None:
        return None
    return url, max(0, bucket_start + bucket - int(now))
