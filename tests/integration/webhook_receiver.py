"""A real HTTP server in a thread that receives webhooks: what the tests deliver to."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every POST (headers, raw body) and answers with `statuses` in turn (the last
    one ever after); with `hold_first`, the first request is held that many seconds before
    it is answered."""

    def __init__(self, statuses=(200,), hold_first: float = 0.0) -> None:
        self.statuses, self.hold_first = list(statuses), hold_first
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    n = len(receiver.requests)
                    receiver.requests.append((dict(self.headers.items()), body))
                    status = receiver.statuses[min(n, len(receiver.statuses) - 1)]
                receiver.arrived.set()
                if n == 0 and receiver.hold_first:
                    time.sleep(receiver.hold_first)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender was killed meanwhile
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self, secret: str) -> list[dict]:
        """Every body received, parsed, after checking its signature and headers."""
        found = []
        for headers, body in list(self.requests):
            expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Trainyard-Signature"], expected), headers
            event = json.loads(body)
            assert headers["X-Trainyard-Event"] == event["type"]
            assert headers["X-Trainyard-Delivery"] == event["id"]
            assert headers["Content-Type"] == "application/json"
            found.append(event)
        return found
