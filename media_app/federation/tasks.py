from celery import shared_task

from .remote import remote_media_fetch


@shared_task(name="media_app.federation.fetch_remote_media")
def fetch_remote_media(server_name: str, media_id: str, slot: str | None = None) -> None:
    # Failures are published to the waiting requests (and cached) by the service; retrying here
    # would only hammer an origin that just failed.
    remote_media_fetch(server_name=server_name, media_id=media_id, slot=slot)
