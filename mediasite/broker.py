"""The embedded default's broker: kombu's filesystem transport, with each message whole before
a worker can see it.

kombu's writer creates a message file under its final name and then writes it; the reader moves
away any file with a message's name without regard to the writer's lock. A worker listing the
folder between the two reads an empty or partial message, cannot decode it, and stops
("Unrecoverable error: JSONDecodeError"); the message is lost with it. Here a message is written
under a name no reader takes and renamed into place once whole (a rename within a directory is
atomic). Registered as the `mediasite-fs://` transport by importing this module, which
mediasite.celery does in every process that sends or receives tasks.
"""
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

SCHEME = "mediasite-fs"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # The name kombu gives a message (its readers order and filter by it).
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: the reader matches what follows the name's first dot against
        # "<queue>.msg", which "<...>.msg.part" is not.
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb", buffering=0) as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
