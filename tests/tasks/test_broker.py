"""The embedded default's broker (mediasite/broker.py): a message appears to workers only once
it is whole, so a worker listing the queue while a task is being sent never reads half of it."""
import os

from kombu import Connection

from mediasite import broker


def test_a_message_is_invisible_to_workers_until_it_is_whole(tmp_path, monkeypatch):
    seen_while_writing = []
    real_open = open

    class Spy:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            # What a worker listing the folder at this moment would take: files with a message's name.
            seen_while_writing.extend(name for name in os.listdir(tmp_path) if name.partition(".")[2] == "celery.msg")
            return self.fh.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fh.__exit__(*exc)

    monkeypatch.setattr(broker, "open", lambda *a, **kw: Spy(real_open(*a, **kw)), raising=False)
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path),
               "control_folder": str(tmp_path.parent / f"{tmp_path.name}-control")}
    with Connection(f"{broker.SCHEME}://localhost//", transport_options=options) as conn:
        queue = conn.SimpleQueue("celery")
        queue.put({"task": "x", "args": list(range(1000))})
        assert seen_while_writing == []  # not under its name while being written
        message = queue.get(timeout=5)
        assert message.payload == {"task": "x", "args": list(range(1000))}
        message.ack()
        queue.close()
    assert os.listdir(tmp_path) == []  # no part file left behind
