// A bengkel-whatsapp webhook receiver in Node.js: verifies every request with the Standard
// Webhooks library before reading it (README "Webhooks").
//
//     npm install
//     WEBHOOK_SECRET=whsec_... PORT=8082 node receiver.mjs
//
// WEBHOOK_SECRET is the secret POST /webhooks answered (shown once). RECEIVER_LOG, when set, is a
// file that gets one JSON line per request: {"verified": true, "id", "type"} or
// {"verified": false, "id", "error"}.

import fs from 'node:fs';
import http from 'node:http';
import { Webhook } from 'standardwebhooks';

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const logPath = process.env.RECEIVER_LOG;
const seen = new Set(); // webhook-id of the events handled; a real receiver keeps them in its database

function record(entry) {
  const line = JSON.stringify(entry);
  console.log(line);
  if (logPath) fs.appendFileSync(logPath, `${line}\n`);
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    // The raw bytes, exactly as sent: the signature covers them, not a re-serialised JSON.
    const body = Buffer.concat(chunks);
    const id = req.headers['webhook-id'] ?? null;
    let event;
    try {
      event = webhook.verify(body, req.headers);
    } catch (e) {
      record({ verified: false, id, error: e.message });
      res.writeHead(400).end();
      return;
    }
    // The same event may come again (a retry after a lost answer, a replay): webhook-id is the
    // idempotency key.
    const duplicate = seen.has(id);
    seen.add(id);
    record({ verified: true, id, type: event.type, duplicate });
    // Answer at once (within WEBHOOK_TIMEOUT_SECS); do slow work elsewhere.
    res.writeHead(204).end();
  });
});

const port = Number(process.env.PORT || 8082);
server.listen(port, process.env.HOST || '127.0.0.1', () => console.log(`listening on ${process.env.HOST || '127.0.0.1'}:${port}`));
