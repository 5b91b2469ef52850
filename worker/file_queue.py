"""The embedded broker: kombu's file-system transport, made safe for concurrent producers.

kombu's own `filesystem` transport creates a message file, then locks it and writes it. A worker
polling the folder every 10 ms can take the file in between, read it empty and die of the
JSONDecodeError: a burst of concurrent submits could kill the only embedded worker. Two changes
make it safe:

- A message is written whole under a temporary name in `staging/` (same filesystem) and renamed
  into the queue folder: a reader sees no file or the whole file, never a partial one.
- A consumer takes a file by renaming it into `taken/` (atomic: of several workers exactly one
  wins), reads it there and deletes it. A file that is not a kombu message (empty, truncated,
  not JSON, written by something else) is logged and dropped; the consumer goes on. Nothing is
  lost by dropping it: the job is in the database, and the reconciler sends it again.

Folder names and the message file names are kombu's, so workers of either kind read the queue.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic

from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

log = logging.getLogger("trainyard.broker")

STAGING = "staging"  # folder beside the queue folder where messages are written before the rename
TAKEN = "taken"      # folder beside it where a consumer reads the message it took


def _is_message(payload: object) -> bool:
    """What kombu's virtual channel needs to build a message, checked before it tries."""
    return (isinstance(payload, dict) and isinstance(payload.get("properties"), dict)
            and "body" in payload)


class Channel(filesystem.Channel):
    def _side_folder(self, name: str) -> Path:
        folder = Path(self.data_folder_out).parent / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _put(self, queue: str, payload: dict, **kwargs) -> None:
        """Write `payload` whole, then publish it with one rename."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        staged = self._side_folder(STAGING) / name
        try:
            with open(staged, "wb") as f:
                f.write(dumps(payload).encode())
            os.replace(staged, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise filesystem.ChannelError(f"cannot add message {name!r} to the queue") from exc

    def _get(self, queue: str) -> dict:
        """The oldest message of `queue`; malformed files are dropped on the way."""
        wanted = f"{queue}.msg"  # names are <time>_<uuid>.<queue>.msg
        taken_folder = self._side_folder(TAKEN)
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            taken = taken_folder / name
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it first
            try:
                raw = taken.read_bytes()
            finally:
                taken.unlink(missing_ok=True)
            try:
                payload = loads(raw.decode())
            except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
                payload = None
            if _is_message(payload):
                return payload
            log.error("dropped a malformed message %s from queue %r (%d bytes: %r); the job, "
                      "if it was one, is still in the database and will be sent again",
                      name, queue, len(raw), raw[:80])
        raise Empty()


class Transport(filesystem.Transport):
    """kombu's file-system transport with atomic writes and tolerant reads (see module doc)."""

    Channel = Channel
    # Its own state, not the stock transport's: two transports in one process must not share.
    global_state = filesystem.virtual.BrokerState()
