"""A bengkel-whatsapp webhook receiver in Python: verifies every request with the Standard
Webhooks library before reading it (README "Webhooks").

    pip install -r requirements.txt
    WEBHOOK_SECRET=whsec_... PORT=8081 python3 receiver.py

WEBHOOK_SECRET is the secret POST /webhooks answered (shown once). RECEIVER_LOG, when set, is a
file that gets one JSON line per request: {"verified": true, "id", "type"} or
{"verified": false, "id", "error"}.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
log_path = os.environ.get("RECEIVER_LOG")
seen = set()  # webhook-id of the events handled; a real receiver keeps them in its database


def record(entry):
    line = json.dumps(entry)
    print(line, flush=True)
    if log_path:
        with open(log_path, "a") as f:
            f.write(line + "\n")


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        # The raw bytes, exactly as sent: the signature covers them, not a re-serialised JSON.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event_id = self.headers.get("webhook-id")
        try:
            event = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError as e:
            record({"verified": False, "id": event_id, "error": str(e)})
            self.send_response(400)
            self.end_headers()
            return
        # The same event may come again (a retry after a lost answer, a replay): webhook-id is
        # the idempotency key.
        duplicate = event_id in seen
        seen.add(event_id)
        record({"verified": True, "id": event_id, "type": event["type"], "duplicate": duplicate})
        # Answer at once (within WEBHOOK_TIMEOUT_SECS); do slow work elsewhere.
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args):
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8081"))
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), port), Receiver)
    print(f"listening on {server.server_address[0]}:{port}", flush=True)
    server.serve_forever()
