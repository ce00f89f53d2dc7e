from django import forms


class PurgeForm(forms.Form):
    """The purge_media options, for the admin page."""

    remote_before = forms.DateTimeField(
        required=False, help_text="Purge remote media not accessed since then (default: the configured lifetime)")
    local_before = forms.DateTimeField(
        required=False, help_text="Propose local media uploaded before then for deletion (default: the configured lifetime)")
