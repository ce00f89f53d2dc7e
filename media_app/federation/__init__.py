"""Federation: this server's signing identity, fetching other servers' media (once, through
Celery, with discovery, signing, SSRF and size guards) and serving local media to other servers."""
