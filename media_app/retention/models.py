from ..models import Media


class Purge(Media):
    """No table of its own: gives the admin a "Retention › Purge" page (preview, then run)
    with its own view permission."""

    class Meta:
        proxy = True
        verbose_name = "purge"
        verbose_name_plural = "purge (preview and run)"
