"""What every web process's first requests would load, loaded once in gunicorn's master.

With preload_app (mediasite/gunicorn_conf.py, the default) the master imports the application
and forks the workers from it: what `warm_up` loads there (the views, Pillow, the file-type
database) sits in pages the workers share instead of one copy per worker, and no client's
first request waits for it. Without preload each worker would load all of it, needed or not,
so it is not called then.
"""


def warm_up() -> None:
    from django.urls import get_resolver
    import magic

    from . import image_ops  # noqa: F401  (Pillow and the plugins it decodes with)

    get_resolver().url_patterns  # imports every view module the URLconf names
    magic.from_buffer(b"\0" * 16, mime=True)  # loads libmagic's database into its shared instance
    # Imported lazily by an upload's first task (its thumbnails) and by a download's first
    # remote fetch (the outbound client and multipart, DNS for SRV records).
    import dns.exception  # noqa: F401
    import dns.resolver  # noqa: F401

    from .federation import discovery, remote  # noqa: F401
    from .tasks import thumbnails  # noqa: F401
