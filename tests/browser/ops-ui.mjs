// Browser test of the ops page (GET /ops/ui) against the real service.
//
// A fake StarSender gateway rejects the first send (400 → the message fails at once); the test
// finds the failed job in the page, lets the gateway succeed, clicks "Requeue" and checks that the
// message is then `sent`. Then the delivery-policy cards: sender and policy as the API answers, a
// policy change and a 422 from the page, a held message, a suppression added (it cancels the held
// message) and removed on the page, who paused a queue. Then the templates panel: both built-ins
// listed, a live preview of the edited text for a seeded customer and a manual record, a 422 for
// an unknown placeholder shown by the editor, a valid edit saved as version 2. Then the messages
// card: a small batch's messages with their client_ref, the list filtered by clicking a batch id,
// "More" following the cursor, a bad batch filter refused with the 422 naming it. Then the webhooks
// panel: a subscription to a local receiver made on the page (its secret shown once), a test event
// delivered, signed and listed with its attempt, a replay, disable/enable, rotate, delete, and the
// panel on a phone-sized screen. The console at 390×844 (run right after the requeue flow, before
// the policy checks add spacing between messages to one number): today's reminder listed and
// filtered by status, a number found in another spelling with its customer and conversation,
// opted out and in, an unsent message cancelled and a failed one requeued. Last, the campaigns
// panel at 390×844: a segment previewed and saved, a two-variant campaign made, started and
// followed to `finished` with its results per variant, start/pause/resume/cancel and a 409 shown,
// a holdout and a follow-up step, the segment deleted. Both HTML pages
// (/ops/ui, then /docs) must work under their Content-Security-Policy (no violation in the
// console). It saves screenshots (target/ops-ui.png; the templates card in
// target/ops-ui-templates.png, the messages card in target/ops-ui-messages.png, the webhooks panel in
// target/ops-ui-webhooks.png and target/ops-ui-webhooks-phone.png, the console in
// target/ops-ui-console-phone.png, the campaigns panel in target/ops-ui-campaigns.png and
// target/ops-ui-campaigns-phone.png) and always cleans
// up (service, gateway, browser, scratch database).
//
// Environment: BENGKEL_BIN (default target/debug/bengkel-whatsapp), TEST_DATABASE_URL (a superuser
// URL of the server where the scratch database is created; default postgres://postgres@127.0.0.1:5432/postgres),
// CHROMIUM (default /usr/bin/chromium), SCREENSHOT (default target/ops-ui.png; the README's picture
// is made with SCREENSHOT=docs/ops-ui.png).
// Exit code 0 and "PASS" on success, 1 and "FAIL: …" otherwise.

import { spawn, execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const execFileP = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(ROOT, process.env.BENGKEL_BIN || 'target/debug/bengkel-whatsapp');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = path.resolve(ROOT, process.env.SCREENSHOT || 'target/ops-ui.png');
const ADMIN_URL = process.env.TEST_DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const JWT_SECRET = 'browser-test-secret-browser-test-secret';
const QUEUE = 'whatsapp-send';
const INBOUND_TOKEN = 'browser-test-inbound-token-0123456789';

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value; throws `what` after `ms`. */
async function waitFor(what, ms, fn, every = 250) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await sleep(every);
  }
}

// ---------- the fake StarSender gateway ----------
function startGateway(port) {
  const gw = { failing: true, requests: [] };
  gw.server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      gw.requests.push({ method: req.method, url: req.url, failing: gw.failing, body });
      const [status, answer] = gw.failing
        ? [400, { success: false, message: 'invalid number' }]
        : [200, { success: true, message: 'ok' }];
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  return new Promise((resolve, reject) => {
    gw.server.on('error', reject);
    gw.server.listen(port, '127.0.0.1', () => resolve(gw));
  });
}

// ---------- the scratch database ----------
function dbUrl(name) {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
}
async function psql(sql) {
  await execFileP('psql', [ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { timeout: 30_000 });
}

// ---------- the service ----------
async function api(base, token, method, p, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = null; }
  return { status: res.status, json, text };
}

// ---------- the console (README "Console") ----------
// On a phone-sized screen: Today lists a reminder of today's run; Find by phone (another
// spelling than the stored one) shows the customer with the vehicle's due date and the number's
// conversation (the customer's message above our reminder), and opts the number out and in again.
async function consoleChecks({ page, base, token, gw }) {
  const call = async (method, p, body, want) => {
    const r = await api(base, token, method, p, body);
    if (want && !want.includes(r.status)) throw new Error(`${method} ${p} → ${r.status} ${r.text}`);
    return r;
  };
  const card = (id) => page.getByTestId(id);
  // Runs before the delivery-policy checks: no spacing between messages to one number yet
  // (RECIPIENT_MIN_INTERVAL_SECS=0), so this number's later messages are not held.
  const today = new Date().toLocaleDateString('en-CA', { timeZone: 'Asia/Jakarta' });
  const phone = '6281277770042';
  const created = await call('POST', '/customers', { nama: 'Konsol Pelanggan', hp: '0812 7777 0042',
    vehicles: [{ no_pol: 'B 7777 CC', model: 'Avanza', next_visit_date: today }] }, [201]);
  const customerId = created.json.data.id;
  await call('POST', '/scheduler/maintenance-reminder/run-now', undefined, [200]);
  const reminder = await waitFor('the reminder in GET /console/today', 10_000, async () =>
    ((await call('GET', '/console/today', undefined, [200])).json.data.items || []).find((r) => r.phone === phone));
  await waitFor('the reminder to be sent', 20_000, async () =>
    (await call('GET', `/whatsapp/messages/${reminder.message_id}`)).json?.data?.status === 'sent');
  const hook = await fetch(`${base}/inbound/starsender/${INBOUND_TOKEN}`, { method: 'POST',
    headers: { 'content-type': 'application/json' }, body: JSON.stringify({ from: phone, message: 'Kapan bengkel buka?' }) });
  if (hook.status !== 200) throw new Error(`inbound webhook → ${hook.status} ${await hook.text()}`);
  await waitFor('the inbound message to be stored', 15_000, async () =>
    ((await call('GET', `/inbound/messages?from=${phone}`, undefined, [200])).json.data.items || []).length === 1);

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/ops/ui`);
  const row = card(`today-row-${reminder.message_id}`);
  await row.waitFor();
  const rowText = await row.textContent();
  if (!rowText.includes('Konsol Pelanggan') || !rowText.includes('B 7777 CC') || !rowText.includes(phone)) {
    throw new Error(`today's row: ${rowText}`);
  }
  await waitFor('the counts to show the day', 10_000, async () =>
    Number((await card('today-count-total').textContent()).trim()) >= 1);
  await card('today-status').selectOption('failed');
  await row.waitFor({ state: 'detached' });
  await card('today-status').selectOption('sent');
  await row.waitFor();
  log(`console today: ${(await row.innerText()).replace(/\s+/g, ' ')}; the status filter hides and shows it`);

  await card('find-q').fill('+62 812-7777-0042');
  await card('find-submit').click();
  const conv = card(`find-conversation-${phone}`);
  await conv.waitFor();
  const dirs = await conv.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-direction')));
  if (JSON.stringify(dirs) !== JSON.stringify(['in', 'out'])) throw new Error(`conversation directions: ${JSON.stringify(dirs)}`);
  const convText = await conv.textContent();
  if (!convText.includes('Kapan bengkel buka?') || !convText.includes('Konsol Pelanggan')) throw new Error(`conversation: ${convText}`);
  const customerText = await card(`find-customer-${customerId}`).textContent();
  if (!customerText.includes('B 7777 CC') || !customerText.includes(today)) throw new Error(`found customer: ${customerText}`);
  log('console find by phone: the customer with the due date and the conversation, newest first');

  await card(`find-optout-${phone}`).click();
  await card(`find-suppression-${phone}`).filter({ hasText: /opted out \(all\)/ }).waitFor();
  const listed = (await call('GET', `/suppressions?phone=${phone}`, undefined, [200])).json.data.items || [];
  if (listed.length !== 1 || listed[0].scope !== 'all') throw new Error(`after opting out on the console: ${JSON.stringify(listed)}`);
  await card(`find-optin-${phone}`).click();
  await card(`find-suppression-${phone}`).filter({ hasText: /not opted out/ }).waitFor();
  log('console opt-out and opt-in');

  // Cancel an unsent message (due in an hour) from the conversation.
  const later = (await call('POST', '/whatsapp/send', { to: phone, body: 'Nanti saja', delay: 3600 }, [202])).json.data.id;
  await card('find-submit').click();
  await card(`find-cancel-${later}`).click();
  await card(`find-cancel-${later}`).waitFor({ state: 'detached' });
  await waitFor(`message ${later} to be cancelled`, 5_000, async () =>
    (await call('GET', `/whatsapp/messages/${later}`)).json?.data?.status === 'cancelled');
  // Requeue a failed one: the gateway refuses it once, then accepts.
  gw.failing = true;
  const failing = (await call('POST', '/whatsapp/send', { to: phone, body: 'Coba lagi' }, [202])).json.data.id;
  await waitFor(`message ${failing} to fail`, 20_000, async () =>
    (await call('GET', `/whatsapp/messages/${failing}`)).json?.data?.status === 'failed');
  gw.failing = false;
  await card('find-submit').click();
  await card(`find-requeue-${failing}`).click();
  await waitFor(`message ${failing} to be sent after the requeue`, 20_000, async () =>
    (await call('GET', `/whatsapp/messages/${failing}`)).json?.data?.status === 'sent');
  log('console cancel of an unsent message and requeue of a failed one');

  const overflow = await page.evaluate(() => {
    const c = document.getElementById('console-card');
    const wide = Array.from(c.querySelectorAll('button, input, select, .record, .scroll'))
      .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().right > window.innerWidth + 1)
      .map((e) => `${e.tagName}.${e.className} ${e.getAttribute('data-testid') || ''} ${Math.round(e.getBoundingClientRect().right)}`);
    // What widens the page, if anything (not counting what scrolls inside its own box).
    const widens = Array.from(document.querySelectorAll('body *'))
      .filter((e) => e.offsetParent !== null && !e.closest('.scroll') && e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 8)
      .map((e) => `${e.tagName}#${e.id}.${e.className} ${e.getAttribute('data-testid') || ''} ${Math.round(e.getBoundingClientRect().right)}`);
    return { cardWidth: c.scrollWidth, clientWidth: c.clientWidth, pageWidth: document.documentElement.scrollWidth, wide, widens };
  });
  if (overflow.wide.length || overflow.cardWidth > overflow.clientWidth + 1 || overflow.pageWidth > 391) {
    throw new Error(`the console is wider than a phone: ${JSON.stringify(overflow)}`);
  }
  await card('console-card').screenshot({ path: path.join(path.dirname(SCREENSHOT), 'ops-ui-console-phone.png') });
  await page.setViewportSize({ width: 1280, height: 900 });
  log('the console fits a 390 px wide screen');
}

// ---------- the delivery-policy cards (README "Delivery policy") ----------
// Each card must show what the API answers; the policy form saves and shows a 422's field errors;
// a held message appears with its reason; a suppression added on the page cancels that number's
// held message, shows in the list and is removed again from the page.
const fmtTime = (v) => new Date(v).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');

async function deliveryPolicyChecks({ page, base, token }) {
  const call = async (method, p, body, want) => {
    const r = await api(base, token, method, p, body);
    if (want && !want.includes(r.status)) throw new Error(`${method} ${p} → ${r.status} ${r.text}`);
    return r;
  };
  await page.goto(`${base}/ops/ui`);
  await page.getByTestId(`queue-row-${QUEUE}`).waitFor();

  // Sender card = GET /ops/sender.
  const sender = (await call('GET', '/ops/sender', undefined, [200])).json.data;
  const card = (id) => page.getByTestId(id);
  await waitFor('the sender card to show GET /ops/sender', 12_000, async () =>
    (await card('sender-rate-configured').textContent()).trim() === `${sender.rate_configured} msg/s`
    && (await card('sender-circuit').textContent()).trim() === sender.circuit
    && (await card('sender-failures').textContent()).trim() === String(sender.consecutive_failures)
    && (await card('sender-burst').textContent()).trim() === String(sender.burst));
  log(`sender card: ${(await card('sender-card').innerText()).replace(/\s*\n\s*/g, ' | ')}`);

  // Policy card = GET /ops/policy; an invalid window shows the 422's field error and changes nothing.
  const policy = (await call('GET', '/ops/policy', undefined, [200])).json.data;
  for (const key of ['send_window', 'recipient_min_interval_secs', 'rate_per_second', 'burst', 'circuit_failure_threshold']) {
    await waitFor(`the policy card to show ${key}`, 12_000, async () =>
      (await card(`policy-current-${key}`).textContent()).trim() === String(policy[key]));
  }
  await card('policy-input-send_window').fill('25:00-26:00');
  await card('policy-save').click();
  await card('policy-field-error-send_window').filter({ hasText: /\S/ }).waitFor();
  await card('flash').filter({ hasText: /422/ }).waitFor();
  const after422 = (await call('GET', '/ops/policy', undefined, [200])).json.data;
  if (after422.send_window !== policy.send_window) throw new Error(`a 422 changed the policy: ${JSON.stringify(after422)}`);
  log(`invalid window refused on the page: "${(await card('policy-field-error-send_window').textContent()).trim()}"`);
  await card('policy-reset').click();

  // 600 s between two messages to one number, saved from the page.
  await card('policy-input-recipient_min_interval_secs').fill('600');
  await card('policy-save').click();
  await card('flash').filter({ hasText: /saved/i }).waitFor();
  const saved = (await call('GET', '/ops/policy', undefined, [200])).json.data;
  if (saved.recipient_min_interval_secs !== 600) throw new Error(`PUT from the page did not persist: ${JSON.stringify(saved)}`);
  await waitFor('the policy card to show 600', 5_000, async () =>
    (await card('policy-current-recipient_min_interval_secs').textContent()).trim() === '600');
  log(`policy saved from the page, updated by ${saved.updated_by}`);
  // Every process follows a change within 2 s; nothing observable says when, so wait that long.
  await sleep(2_100);

  // Two messages to one number: the second is held for recipient spacing.
  const phone = '0812 5555 0001';
  const first = await call('POST', '/whatsapp/send', { to: phone, body: 'first' }, [202]);
  await waitFor('the first message to be sent', 15_000, async () =>
    (await call('GET', `/whatsapp/messages/${first.json.data.id}`)).json?.data?.status === 'sent');
  const second = await call('POST', '/whatsapp/send', { to: phone, body: 'second' }, [202]);
  const heldId = second.json.data.id;
  const held = await waitFor(`message ${heldId} in GET /ops/held`, 20_000, async () => {
    const items = (await call('GET', '/ops/held?limit=100', undefined, [200])).json.data.items || [];
    return items.find((m) => m.id === heldId && m.held_reason === 'recipient_spacing');
  });
  const heldRow = card(`held-row-${heldId}`);
  await waitFor('the held message on the page', 15_000, async () => {
    if ((await heldRow.count()) === 0) { await card('refresh').click(); return false; }
    const t = await heldRow.textContent();
    return t.includes('recipient_spacing') && t.includes(fmtTime(held.held_until));
  }, 1000);
  log(`held message on the page: ${(await heldRow.innerText()).replace(/\s+/g, ' ')}`);

  // Add the number to the suppression list on the page: the held message is cancelled.
  await card('suppression-phone').fill(phone);
  await card('suppression-scope').selectOption('all');
  await card('suppression-reason').fill('browser test');
  await card('suppression-add').click();
  await card('flash').filter({ hasText: /added to the suppression list/ }).waitFor();
  const listed = (await call('GET', `/suppressions?phone=${encodeURIComponent(phone)}`, undefined, [200])).json.data.items || [];
  if (listed.length !== 1 || listed[0].scope !== 'all' || listed[0].reason !== 'browser test' || listed[0].created_by !== 'browser') {
    throw new Error(`GET /suppressions after adding on the page: ${JSON.stringify(listed)}`);
  }
  const stored = listed[0].phone;
  const suppRow = card(`suppression-row-${stored}`);
  await suppRow.waitFor();
  const suppText = await suppRow.textContent();
  if (!suppText.includes('browser test') || !suppText.includes('all')) throw new Error(`suppression row: ${suppText}`);
  const cancelled = await waitFor(`held message ${heldId} to be cancelled`, 10_000, async () => {
    const m = (await call('GET', `/whatsapp/messages/${heldId}`)).json?.data;
    return m?.status === 'cancelled' ? m : null;
  });
  if (cancelled.last_error !== 'recipient opted out') throw new Error(`cancelled message: ${JSON.stringify(cancelled)}`);
  await waitFor('the cancelled message to leave the held list', 15_000, async () => {
    if ((await heldRow.count()) === 0) return true;
    await card('refresh').click();
    return false;
  }, 1000);
  log(`suppressed ${stored} on the page; held message ${heldId} is cancelled (${cancelled.last_error})`);

  // The same number again with another scope: updated, one row.
  await card('suppression-phone').fill(phone);
  await card('suppression-scope').selectOption('reminders');
  await card('suppression-add').click();
  await card('flash').filter({ hasText: /updated in the suppression list/ }).waitFor();
  await waitFor('the row to show scope reminders', 5_000, async () => (await suppRow.textContent()).includes('reminders'));

  // The phone filter: another number hides the row, this one shows it.
  await card('suppression-filter').fill('081299990009');
  await suppRow.waitFor({ state: 'detached' });
  await card('suppression-filter').fill(phone);
  await suppRow.waitFor();
  log('phone filter hides and shows the row');

  // Remove from the page.
  await card(`suppression-remove-${stored}`).click();
  await card('flash').filter({ hasText: /removed from the suppression list/ }).waitFor();
  await suppRow.waitFor({ state: 'detached' });
  const gone = (await call('GET', `/suppressions?phone=${encodeURIComponent(phone)}`, undefined, [200])).json.data.items || [];
  if (gone.length) throw new Error(`still suppressed after Remove: ${JSON.stringify(gone)}`);
  await call('DELETE', `/suppressions/${encodeURIComponent(stored)}`, undefined, [404]);
  log(`removed ${stored} on the page (DELETE again → 404)`);

  // An operator's pause shows who paused the queue.
  await card(`pause-${QUEUE}`).click();
  await card(`queue-paused-${QUEUE}`).filter({ hasText: /by browser/ }).waitFor();
  log(`paused on the page: "${(await card(`queue-paused-${QUEUE}`).textContent()).trim()}"`);
  await card(`resume-${QUEUE}`).click();
  await card(`pause-${QUEUE}`).waitFor();
}

// ---------- the templates panel (README "Templates") ----------
// Lists the built-in templates as GET /templates does; the live preview renders the text being
// edited for a seeded customer (and a manual record) without saving it; a body with an unknown
// placeholder shows the 422's message by the editor and changes nothing; a valid edit is version 2
// with two versions in the history.
async function templatesChecks({ page, base, token }) {
  const call = async (method, p, body, want) => {
    const r = await api(base, token, method, p, body);
    if (want && !want.includes(r.status)) throw new Error(`${method} ${p} → ${r.status} ${r.text}`);
    return r;
  };
  const card = (id) => page.getByTestId(id);
  const KEY = 'maintenance_reminder';

  // A customer whose name already carries the salutation, and a manual record.
  const customer = (await call('POST', '/customers', {
    nama: 'Ibu Siti Rahma', hp: '0812 7777 0001',
    vehicles: [{ no_pol: 'B 77 SR', model: 'Jazz', next_visit_date: '2026-12-01' }],
  }, [201])).json.data;
  const record = (await call('POST', '/manual-whatsapp/', {
    customer_name: 'Bapak Joko', nopol: 'D 1 JK', no_hp: '0812 7777 0002', next_service: '2026-12-15',
  }, [200, 201])).json.data;
  const previews = [];
  const onRequest = (req) => { if (req.method() === 'POST' && /\/templates\/[^/]+\/preview$/.test(req.url())) previews.push(req.postDataJSON()); };
  page.on('request', onRequest);

  await page.goto(`${base}/ops/ui`);
  const listed = (await call('GET', '/templates', undefined, [200])).json.data;
  for (const key of ['maintenance_reminder', 'manual_reminder']) {
    const t = listed.find((x) => x.key === key);
    if (!t || !t.builtin || t.current_version !== 1) throw new Error(`GET /templates: ${JSON.stringify(listed)}`);
    const row = card(`template-row-${key}`);
    await row.waitFor();
    const cells = (await row.locator('th, td').allTextContents()).map((c) => c.trim());
    if (cells[0] !== key || cells[1] !== 'built-in' || cells[2] !== '1' || !cells[3].includes('{nama}')) {
      throw new Error(`template row ${key}: ${JSON.stringify(cells)}`);
    }
  }
  log('templates panel lists both built-in templates (version 1)');

  // Selecting one shows its current bodies and its history.
  const seeded = listed.find((x) => x.key === KEY);
  await card(`template-open-${KEY}`).click();
  await card('template-editor-title').filter({ hasText: `${KEY} · version 1` }).waitFor();
  if ((await card('template-body-id').inputValue()) !== seeded.bodies.id
    || (await card('template-body-en').inputValue()) !== (seeded.bodies.en || '')) {
    throw new Error('the editor does not show the current id/en bodies');
  }
  await card('template-version-row-1').waitFor();

  // Live preview of the text being edited, for the seeded customer.
  await card('preview-customer').selectOption(customer.id);
  const draft = 'Halo {salutation} {nama}, servis {no_pol} pada {tanggal}.';
  await card('template-body-id').fill(draft);
  const want = 'Halo Ibu Siti Rahma, servis B 77 SR pada 1 Desember 2026.';
  await waitFor('the live preview of the edited text', 10_000, async () =>
    (await card('template-preview-text').textContent()) === want
    && (await card('template-preview-meta').textContent()).includes('unsaved edit of version 1'));
  log(`live preview: "${want}"`);
  // Typing is debounced: one preview once the typing stops, not one per key.
  const before = previews.length;
  await card('template-body-id').pressSequentially(' Terima kasih', { delay: 40 });
  await waitFor('the preview of the typed text', 10_000, async () =>
    (await card('template-preview-text').textContent()) === `${want} Terima kasih`);
  const typed = previews.length - before;
  if (typed < 1 || typed > 3) throw new Error(`${typed} preview calls for 13 keys typed (debounce)`);
  const last = previews[previews.length - 1];
  if (last.body !== `${draft} Terima kasih` || last.customer_id !== customer.id || last.language !== 'id') {
    throw new Error(`the preview sent ${JSON.stringify(last)}`);
  }
  log(`typing 13 keys made ${typed} preview call(s)`);

  // An unknown placeholder: the 422's message by the editor, nothing else changes.
  const bad = 'Halo {nama}, kode booking {kode}';
  const refused = (await call('PUT', `/templates/${KEY}`, { body: bad, language: 'id' }, [422])).json;
  const message = refused.errors.find((e) => e.field === 'body').message;
  await card('template-body-id').fill(bad);
  await card('template-save').click();
  await card('template-body-error').filter({ hasText: message }).waitFor();
  await card('template-preview-error').filter({ hasText: '{kode}' }).waitFor();
  const after422 = (await call('GET', `/templates/${KEY}`, undefined, [200])).json.data;
  if (after422.current_version !== 1 || after422.versions.length !== 1) throw new Error(`a 422 stored a version: ${JSON.stringify(after422)}`);
  if ((await card('template-body-id').inputValue()) !== bad) throw new Error('the 422 changed the editor');
  if (!(await card('template-editor-title').textContent()).includes('version 1')) throw new Error('the 422 changed the version');
  if ((await card(`template-current-version-${KEY}`).textContent()).trim() !== '1') throw new Error('the 422 changed the list');
  log(`unknown placeholder refused by the editor: "${(await card('template-body-error').textContent()).trim()}"`);

  // A valid edit: version 2, two versions in the history.
  const good = 'Halo {salutation} {nama}, kendaraan {no_pol} jatuh tempo servis pada {tanggal}. Hubungi {service_phone}.';
  await card('template-body-id').fill(good);
  await card('template-save').click();
  await card('flash').filter({ hasText: `Template ${KEY} saved (id): version 2` }).waitFor();
  await card('template-editor-title').filter({ hasText: `${KEY} · version 2` }).waitFor();
  await card('template-version-row-2').waitFor();
  const rows = await card('template-versions').locator('tbody tr').count();
  if (rows !== 2) throw new Error(`the history shows ${rows} versions`);
  await waitFor('the list to show version 2', 5_000, async () =>
    (await card(`template-current-version-${KEY}`).textContent()).trim() === '2');
  const saved = (await call('GET', `/templates/${KEY}`, undefined, [200])).json.data;
  if (saved.current_version !== 2 || saved.bodies.id !== good || saved.bodies.en !== seeded.bodies.en
    || saved.versions.length !== 2 || saved.versions[0].created_by !== 'browser') {
    throw new Error(`after Save: ${JSON.stringify(saved)}`);
  }
  if ((await card('template-body-error').textContent()).trim()) throw new Error('the 422 message stayed after a save');
  await waitFor('the preview of version 2', 10_000, async () =>
    (await card('template-preview-text').textContent()).startsWith('Halo Ibu Siti Rahma, kendaraan B 77 SR jatuh tempo servis pada 1 Desember 2026.')
    && (await card('template-preview-meta').textContent()).startsWith('id · version 2'));
  // An old version's bodies.
  await card('template-version-1').click();
  await waitFor('version 1 bodies', 5_000, async () =>
    (await card('template-version-body-id').textContent()) === seeded.bodies.id);
  log('saved version 2 from the page; the history shows 2 versions and version 1\'s bodies');

  // The manual template previews a manual record, in English when that body is edited.
  await card('template-open-manual_reminder').click();
  await card('template-editor-title').filter({ hasText: 'manual_reminder · version 1' }).waitFor();
  await card('preview-manual').selectOption(record.id);
  await waitFor('the manual preview', 10_000, async () => {
    const t = await card('template-preview-text').textContent();
    return t.startsWith('Halo Bapak Joko,') && t.includes('D 1 JK') && t.includes('15 Desember 2026');
  });
  await card('template-language').selectOption('en');
  if (!(await card('template-body-id').getAttribute('readonly') !== null)) throw new Error('the id body stays editable in en');
  await waitFor('the English manual preview', 10_000, async () => {
    const t = await card('template-preview-text').textContent();
    return t.startsWith('Hello Bapak Joko,') && t.includes('15 December 2026');
  });
  log('manual record preview in id and en');
  page.off('request', onRequest);
  await card('templates-card').screenshot({ path: path.join(path.dirname(SCREENSHOT), 'ops-ui-templates.png') });
}

// ---------- the messages card (README "The ops page") ----------
// GET /whatsapp/messages with an ops token, newest first: a small batch's messages show their
// batch (shortened) and client_ref; clicking a batch id lists exactly that batch; "More" appends
// the next page; a batch filter that is not a UUID shows the 422 naming it.
async function messagesChecks({ page, base, token }) {
  const call = async (method, p, body, want) => {
    const r = await api(base, token, method, p, body);
    if (want && !want.includes(r.status)) throw new Error(`${method} ${p} → ${r.status} ${r.text}`);
    return r;
  };
  const card = (id) => page.getByTestId(id);
  const rows = () => card('messages-table').locator('tbody tr[data-testid^="message-row-"]')
    .evaluateAll((trs) => trs.map((tr) => ({ id: tr.dataset.testid.replace('message-row-', ''), batch: tr.dataset.batch })));

  // Due in an hour (nothing is sent while the test looks): 52 in one batch (more than a page),
  // then a small batch (one item refused) and a single send.
  const big = (await call('POST', '/whatsapp/send-batch', {
    messages: Array.from({ length: 52 }, (_, i) => ({
      to: `0812 6000 ${String(i).padStart(4, '0')}`, body: `bulk ${i}`, delay: 3600, client_ref: `BULK-${i}`,
    })),
  }, [202])).json.data;
  const small = (await call('POST', '/whatsapp/send-batch', {
    messages: [
      { to: '0812 6100 0001', body: 'Invoice INV-001', delay: 3600, client_ref: 'INV-001' },
      { to: '0812 6100 0002', body: 'Invoice INV-002', delay: 3600, client_ref: 'INV-002' },
      { to: '0812 6100 0003', body: 'no reference', delay: 3600 },
      { to: '12', body: 'refused', client_ref: 'INV-BAD' },
    ],
  }, [202])).json.data;
  if (big.accepted !== 52 || small.accepted !== 3 || small.rejected !== 1 || !big.batch_id || !small.batch_id
    || big.batch_id === small.batch_id) {
    throw new Error(`send-batch answers: ${JSON.stringify({ big: { ...big, items: undefined }, small })}`);
  }
  const single = (await call('POST', '/whatsapp/send', { to: '0812 6100 0009', body: 'single', delay: 3600 }, [202])).json.data;
  const smallItems = small.items.filter((i) => i.id);
  log(`sent batch ${small.batch_id} (3 messages, 1 refused), batch ${big.batch_id} (52) and a single send`);

  await page.goto(`${base}/ops/ui`);
  await card('messages-card').waitFor();
  // Newest first: the single send, then the small batch (its ids descending), then the big one.
  const newest = [single.id, ...smallItems.map((i) => i.id).sort().reverse()];
  await waitFor('the newest messages at the top of the messages card', 15_000, async () =>
    JSON.stringify((await rows()).slice(0, 4).map((r) => r.id)) === JSON.stringify(newest));
  for (const item of smallItems) {
    const row = card(`message-row-${item.id}`);
    if ((await row.getAttribute('data-batch')) !== small.batch_id) throw new Error(`row ${item.id} is not in batch ${small.batch_id}`);
    const shown = (await card(`message-batch-${item.id}`).textContent()).trim();
    if (!shown.startsWith('…') || shown.length < 5 || !small.batch_id.endsWith(shown.slice(1))) {
      throw new Error(`row ${item.id} shows batch "${shown}" for ${small.batch_id}`);
    }
    const ref = card(`message-client-ref-${item.id}`);
    if (item.client_ref) {
      if ((await ref.textContent()).trim() !== item.client_ref) throw new Error(`row ${item.id}: client_ref "${await ref.textContent()}"`);
    } else if (await ref.count()) {
      throw new Error(`row ${item.id} shows a client_ref it does not have`);
    }
    const cells = (await row.locator('td').allTextContents()).map((c) => c.trim());
    if (!cells.includes('adhoc') || !cells.includes('queued') || !cells.includes('0/8')) throw new Error(`row ${item.id}: ${JSON.stringify(cells)}`);
  }
  if (await card(`message-batch-${single.id}`).count()) throw new Error('the single send shows a batch');
  if ((await rows()).length !== 50 || await card('messages-more').isDisabled()) throw new Error('the first page is not 50 rows with More');
  log(`messages card: ${(await card(`message-row-${smallItems[0].id}`).innerText()).replace(/\s+/g, ' ')}`);

  // Clicking a batch id lists exactly that batch.
  await card(`message-batch-${smallItems[1].id}`).click();
  await waitFor('only the small batch in the list', 10_000, async () => {
    const r = await rows();
    return r.length === 3 && r.every((x) => x.batch === small.batch_id);
  });
  if ((await card('messages-batch').inputValue()) !== small.batch_id) throw new Error('the batch filter does not show the clicked batch');
  if (!(await card('messages-more').isDisabled())) throw new Error('More is enabled on a 3-message batch');
  await card('messages-card').screenshot({ path: path.join(path.dirname(SCREENSHOT), 'ops-ui-messages.png') });
  log(`clicked the batch id: ${(await rows()).length} rows, all of batch ${small.batch_id}`);

  // The big batch: a page of 50, then More follows the cursor to the last 2.
  await card('messages-batch').fill(big.batch_id);
  await waitFor('the first page of the big batch', 10_000, async () => {
    const r = await rows();
    return r.length === 50 && r.every((x) => x.batch === big.batch_id);
  });
  if (await card('messages-more').isDisabled()) throw new Error('More is disabled with 52 messages in the batch');
  await card('messages-more').click();
  await waitFor('all 52 messages of the big batch after More', 10_000, async () => {
    const r = await rows();
    return r.length === 52 && r.every((x) => x.batch === big.batch_id) && new Set(r.map((x) => x.id)).size === 52;
  });
  if (!(await card('messages-more').isDisabled())) throw new Error('More is still enabled after the last page');
  const refs = await card('messages-table').locator('[data-testid^="message-client-ref-"]').allTextContents();
  const want = Array.from({ length: 52 }, (_, i) => `BULK-${i}`).sort();
  if (JSON.stringify(refs.map((r) => r.trim()).sort()) !== JSON.stringify(want)) throw new Error(`client_refs of the big batch: ${refs}`);
  log('big batch: 50 rows, More → 52, each with its client_ref');

  // Not a batch id: the 422 names the filter; clearing the filters shows everything again.
  await card('messages-batch').fill('INV-001');
  await card('messages-error').filter({ hasText: /422.*batch/ }).waitFor();
  if ((await card('messages-batch').getAttribute('aria-invalid')) !== 'true') throw new Error('the bad batch filter is not marked invalid');
  log(`bad batch filter: "${(await card('messages-error').textContent()).trim()}"`);
  await card('messages-clear').click();
  await card(`message-row-${single.id}`).waitFor();
  await card('messages-error').waitFor({ state: 'hidden' });
}

// ---------- the webhooks panel (README "Webhooks") ----------
// A receiver on 127.0.0.1 (the service runs with WEBHOOK_ALLOW_PRIVATE=true). A subscription made
// on the page shows its secret once; a 422 is shown by its field; "Send test" delivers a signed
// webhook.test that the panel lists with its attempt; Replay sends the same webhook-id again;
// disable/enable, rotate (a new secret shown once) and delete work from the page; the panel is
// usable on a phone-sized viewport.
function startReceiver(port) {
  const rx = { requests: [] };
  rx.server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      rx.requests.push({ url: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('thanks from the browser-test receiver');
    });
  });
  return new Promise((resolve, reject) => {
    rx.server.on('error', reject);
    rx.server.listen(port, '127.0.0.1', () => resolve(rx));
  });
}

/** Standard Webhooks: v1,base64(HMAC-SHA256(base64-decoded secret after whsec_, "id.timestamp.body")). */
function signed(secret, request) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const { 'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': sig } = request.headers;
  const mac = crypto.createHmac('sha256', key).update(`${id}.${ts}.`).update(request.body).digest('base64');
  return (sig || '').split(' ').includes(`v1,${mac}`);
}

async function webhooksChecks({ page, base, token, cleanup }) {
  const call = async (method, p, body, want) => {
    const r = await api(base, token, method, p, body);
    if (want && !want.includes(r.status)) throw new Error(`${method} ${p} → ${r.status} ${r.text}`);
    return r;
  };
  const card = (id) => page.getByTestId(id);
  const rx = await startReceiver(await freePort());
  cleanup.push(() => new Promise((r) => { rx.server.closeAllConnections?.(); rx.server.close(() => r()); }));
  const rxUrl = `http://127.0.0.1:${rx.server.address().port}/hooks/whatsapp`;

  await page.goto(`${base}/ops/ui`);
  await card('webhooks-table').getByText('No subscriptions yet.').waitFor();

  // No event chosen: the 422 names the field, nothing is created.
  await card('webhook-url').fill(rxUrl);
  await card('webhook-create').click();
  await card('webhook-events-error').filter({ hasText: /at least one/ }).waitFor();
  if ((await call('GET', '/webhooks', undefined, [200])).json.data.length) throw new Error('a 422 created a subscription');
  log(`no event chosen: "${(await card('webhook-events-error').textContent()).trim()}"`);

  // Subscribe: the secret is shown once, the row appears.
  await card('webhook-description').fill('browser test receiver');
  await card('webhook-event-message.sent').check();
  await card('webhook-event-message.failed').check();
  await card('webhook-create').click();
  await card('webhook-secret').waitFor();
  const secret = (await card('webhook-secret-value').textContent()).trim();
  if (!/^whsec_[A-Za-z0-9+/]{43}=$/.test(secret)) throw new Error(`secret shown: ${JSON.stringify(secret)}`);
  const subs = (await call('GET', '/webhooks', undefined, [200])).json.data;
  if (subs.length !== 1 || subs[0].url !== rxUrl || subs[0].description !== 'browser test receiver'
    || JSON.stringify(subs[0].events) !== JSON.stringify(['message.sent', 'message.failed']) || !subs[0].enabled
    || 'secret' in subs[0]) {
    throw new Error(`GET /webhooks after subscribing on the page: ${JSON.stringify(subs)}`);
  }
  const id = subs[0].id;
  const row = card(`webhook-row-${id}`);
  await row.waitFor();
  const rowText = await row.textContent();
  if (!rowText.includes(rxUrl) || !rowText.includes('message.sent, message.failed') || !rowText.includes('enabled')) {
    throw new Error(`subscription row: ${rowText}`);
  }
  if ((await card('webhook-url').inputValue()) !== '') throw new Error('the form was not cleared');
  await card('webhook-secret-hide').click();
  await card('webhook-secret').waitFor({ state: 'hidden' });
  log(`subscribed ${rxUrl} on the page; secret shown once (${secret.slice(0, 10)}…)`);

  // Send test: the deliveries open and list the webhook.test with its attempt.
  await card(`webhook-test-${id}`).click();
  await card('flash').filter({ hasText: /Test event queued/ }).waitFor();
  await card('webhook-deliveries').waitFor();
  const delivered = await waitFor('the test delivery to succeed', 20_000, async () => {
    const items = (await call('GET', `/webhooks/${id}/deliveries`, undefined, [200])).json.data.items;
    return items.length === 1 && items[0].status === 'succeeded' && items[0].attempts.length === 1 ? items[0] : null;
  });
  const delivery = card(`delivery-${delivered.id}`);
  await waitFor('the succeeded delivery with its attempt on the page', 15_000, async () => {
    if ((await delivery.count()) === 0 || (await delivery.getAttribute('data-status')) !== 'succeeded'
      || (await card(`delivery-attempt-${delivered.id}-1`).count()) === 0) {
      await card('webhook-deliveries-refresh').click();
      return false;
    }
    return true;
  }, 500);
  const attempt = delivered.attempts[0];
  const cells = (await card(`delivery-attempt-${delivered.id}-1`).locator('td').allTextContents()).map((c) => c.trim());
  if (delivered.type !== 'webhook.test' || attempt.http_status !== 200 || attempt.class !== 'ok'
    || cells[2] !== '200' || cells[3] !== 'ok' || cells[4] !== `${attempt.duration_ms} ms`
    || cells[5] !== 'thanks from the browser-test receiver' || cells[1] !== fmtTime(attempt.at)) {
    throw new Error(`attempt on the page ${JSON.stringify(cells)} / API ${JSON.stringify(delivered)}`);
  }
  if (!(await delivery.textContent()).includes(delivered.event_id)) throw new Error('the delivery does not show its webhook-id');
  if (rx.requests.length !== 1) throw new Error(`the receiver got ${rx.requests.length} requests`);
  const [first] = rx.requests;
  const body = JSON.parse(first.body.toString('utf8'));
  // Every event's data has the five fields (SPEC §12), null for a test event.
  const fields = ['batch_id', 'client_ref', 'kind', 'message_id', 'to'];
  if (first.headers['webhook-id'] !== delivered.event_id || body.type !== 'webhook.test' || !signed(secret, first)
    || JSON.stringify(Object.keys(body.data).sort()) !== JSON.stringify(fields) || fields.some((f) => body.data[f] !== null)
    || first.headers['content-type'] !== 'application/json') {
    throw new Error(`the receiver got ${JSON.stringify({ headers: first.headers, body: first.body.toString() })}`);
  }
  log(`test event delivered, signed with the secret shown; the panel lists it: ${cells.join(' | ')}`);

  // Replay: the same webhook-id again, a second attempt listed.
  await card(`delivery-replay-${delivered.id}`).click();
  await card('flash').filter({ hasText: /queued again/ }).waitFor();
  await waitFor('the replay at the receiver', 15_000, async () => rx.requests.length === 2);
  const replayed = rx.requests[1];
  if (replayed.headers['webhook-id'] !== delivered.event_id || !replayed.body.equals(first.body) || !signed(secret, replayed)) {
    throw new Error(`the replay differs: ${JSON.stringify(replayed.headers)}`);
  }
  await waitFor('the second attempt on the page', 15_000, async () => {
    if ((await card(`delivery-attempt-${delivered.id}-2`).count()) === 0) { await card('webhook-deliveries-refresh').click(); return false; }
    return (await delivery.getAttribute('data-status')) === 'succeeded';
  }, 500);
  log('replayed from the page: same webhook-id and body, freshly signed, two attempts listed');

  // Disable (Replay and Send test are then off), enable again.
  await card(`webhook-toggle-${id}`).click();
  await card('flash').filter({ hasText: /disabled/ }).waitFor();
  await card(`webhook-disabled-reason-${id}`).filter({ hasText: 'manual' }).waitFor();
  await waitFor('Replay and Send test to be off', 5_000, async () =>
    (await card(`delivery-replay-${delivered.id}`).isDisabled()) && (await card(`webhook-test-${id}`).isDisabled()));
  if ((await call('GET', `/webhooks/${id}`, undefined, [200])).json.data.enabled) throw new Error('Disable did not disable');
  await card(`webhook-toggle-${id}`).click();
  await card('flash').filter({ hasText: /enabled/ }).waitFor();
  await waitFor('the row to show enabled', 5_000, async () => (await row.getAttribute('data-enabled')) === 'true');
  log('disabled (reason manual) and enabled again from the page');

  // Rotate: a new secret, shown once.
  await card(`webhook-rotate-${id}`).click();
  await card('webhook-secret-title').filter({ hasText: 'New signing secret' }).waitFor();
  const rotated = (await card('webhook-secret-value').textContent()).trim();
  if (!rotated.startsWith('whsec_') || rotated === secret) throw new Error(`rotated secret: ${rotated}`);
  if (!(await card('webhook-secret-note').textContent()).includes('old secret keeps signing')) throw new Error('rotation note missing');
  log('secret rotated from the page');

  // A phone: nothing in the panel is wider than the screen; the rows stack.
  await page.setViewportSize({ width: 390, height: 844 });
  await card(`webhook-deliveries-${id}`).click();
  await card(`delivery-attempt-${delivered.id}-2`).waitFor();
  const overflow = await page.evaluate(() => {
    const c = document.getElementById('webhooks-card');
    const wide = Array.from(c.querySelectorAll('button, input, select, td, code, .delivery'))
      .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().right > window.innerWidth + 1)
      .map((e) => `${e.tagName}.${e.className} ${e.getAttribute('data-testid') || ''} ${Math.round(e.getBoundingClientRect().right)}`);
    return { cardWidth: c.scrollWidth, clientWidth: c.clientWidth, wide };
  });
  if (overflow.wide.length || overflow.cardWidth > overflow.clientWidth + 1) {
    throw new Error(`the webhooks panel is wider than a phone: ${JSON.stringify(overflow)}`);
  }
  await card('webhooks-card').screenshot({ path: path.join(path.dirname(SCREENSHOT), 'ops-ui-webhooks-phone.png') });
  await page.setViewportSize({ width: 1280, height: 900 });
  await card('webhooks-card').screenshot({ path: path.join(path.dirname(SCREENSHOT), 'ops-ui-webhooks.png') });
  log('the panel fits a 390 px wide screen');

  // Delete, after a confirmation.
  await card(`webhook-delete-${id}`).click();
  await card(`webhook-delete-confirm-${id}`).click();
  await card('flash').filter({ hasText: /deleted/ }).waitFor();
  await row.waitFor({ state: 'detached' });
  await card('webhook-deliveries').waitFor({ state: 'hidden' });
  await call('GET', `/webhooks/${id}`, undefined, [404]);
  log('deleted from the page (GET → 404)');
}

// ---------- the campaigns panel (README "Campaigns") ----------
// On a phone-sized screen: twelve customers whose vehicles have a model nobody else's has and two
// custom templates; a segment previewed on the page (its count and its numbers, as the API
// answers) and saved; a 422 shown by the campaign form; a two-variant campaign made on the page
// from the saved segment, started, and followed by the page's auto-refresh until `finished`; the
// results table shows both variants, not holdouts, with `sent` summing to the recipients and the
// sent rate at 100 %. Then a campaign starting tomorrow: Start (scheduled), Pause, Resume on the
// page, and a Pause left on the page after the campaign was cancelled elsewhere shows the 409's
// message. A campaign from the form's filters with a holdout and a no_reply follow-up step is
// stored as the form says and cancelled on the page; the saved segment is deleted on the page.
// Nothing in the panel is wider than the screen.
async function campaignsChecks({ page, base, token, gw }) {
  const call = async (method, p, body, want) => {
    const r = await api(base, token, method, p, body);
    if (want && !want.includes(r.status)) throw new Error(`${method} ${p} → ${r.status} ${r.text}`);
    return r;
  };
  const card = (id) => page.getByTestId(id);
  const MODEL = 'Xenia Kampanye';
  // Twelve, so that a 50/50 split leaves a variant empty only once in 2,048 campaign ids.
  const N = 12;
  const phones = [];
  for (let i = 1; i <= N; i++) {
    const nn = String(i).padStart(2, '0');
    phones.push(`62812666600${nn}`);
    await call('POST', '/customers', { nama: `Pelanggan Kampanye ${i}`, hp: `0812 6666 00${nn}`,
      vehicles: [{ no_pol: `B 66${nn} KP`, model: MODEL, next_visit_date: `2027-01-${nn}` }] }, [201]);
  }
  await call('PUT', '/templates/promo_a', { body: 'Halo {nama}, promo A: cuci gratis untuk {no_pol}.' }, [200, 201]);
  await call('PUT', '/templates/promo_b', { body: 'Halo {nama}, promo B: diskon oli 20%.' }, [200, 201]);
  const wanted = (await call('POST', '/segments/preview', { source: 'vehicles', filters: { model: 'xenia kampanye' } }, [200])).json.data;
  if (wanted.count !== N) throw new Error(`POST /segments/preview of the seeded model: ${JSON.stringify(wanted)}`);
  const sentBefore = gw.requests.length;

  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/ops/ui`);
  await card('campaigns-card').waitFor();
  // The templates just made are offered to the variants once GET /templates has answered.
  await card('variant-0-0-template').locator('option[value="promo_b"]').waitFor({ state: 'attached' });

  // Preview a segment from the form's filters: the count and the first recipients.
  await card('segment-source').selectOption('vehicles');
  await card('segment-model').fill('xenia kampanye');
  await card('segment-preview').click();
  await card('segment-preview-count').filter({ hasText: new RegExp(`^${N}$`) }).waitFor();
  for (const p of phones) await card(`segment-preview-row-${p}`).waitFor();
  const firstRow = (await card(`segment-preview-row-${phones[0]}`).innerText()).replace(/\s+/g, ' ');
  if (!firstRow.includes('Pelanggan Kampanye 1') || !firstRow.includes('B 6601 KP') || !firstRow.includes('2027-01-01')) {
    throw new Error(`preview row: ${firstRow}`);
  }
  log(`campaigns: segment preview on the page shows ${wanted.count} recipients (${firstRow})`);

  // Save it: listed, and chosen for the next campaign.
  await card('segment-name').fill('Xenia Kampanye');
  await card('segment-save').click();
  await card('flash').filter({ hasText: /Segment "Xenia Kampanye" saved/ }).waitFor();
  const segment = ((await call('GET', '/segments', undefined, [200])).json.data || []).find((s) => s.name === 'Xenia Kampanye');
  if (!segment || segment.source !== 'vehicles' || segment.filters.model !== 'xenia kampanye') {
    throw new Error(`GET /segments after saving on the page: ${JSON.stringify(segment)}`);
  }
  await card(`segment-row-${segment.id}`).waitFor();
  if ((await card('campaign-segment').inputValue()) !== segment.id) throw new Error('the saved segment is not chosen for the campaign');

  // A campaign without a name or templates: the 422's fields by the form.
  await card('campaign-create').click();
  await card('campaign-errors').locator('li', { hasText: /^name: / }).waitFor();
  await card('campaign-errors').locator('li', { hasText: 'steps[0].variants[0].template_key' }).waitFor();
  log(`campaigns: a 422 listed by the form: ${(await card('campaign-errors').innerText()).replace(/\n/g, ' | ')}`);

  // Two variants, 50/50, made (draft) and started from the page.
  await card('campaign-name').fill('Promo Xenia');
  await card('variant-0-0-template').selectOption('promo_a');
  await card('variant-0-0-weight').fill('50');
  await card('variant-add-0').click();
  await card('variant-0-1-template').selectOption('promo_b');
  await card('variant-0-1-weight').fill('50');
  await card('campaign-create').click();
  await card('flash').filter({ hasText: /Campaign "Promo Xenia" made \(draft\)/ }).waitFor();
  if ((await card('campaign-errors').locator('li').count()) !== 0) throw new Error('the 422 stayed listed after a success');
  const made = ((await call('GET', '/campaigns', undefined, [200])).json.data || []).find((c) => c.name === 'Promo Xenia');
  if (!made || made.status !== 'draft' || made.segment_id !== segment.id) throw new Error(`GET /campaigns: ${JSON.stringify(made)}`);
  const detail = (await call('GET', `/campaigns/${made.id}`, undefined, [200])).json.data;
  const keys = detail.steps[0].variants.map((v) => `${v.template_key}:${v.weight}`).join(',');
  if (detail.steps.length !== 1 || keys !== 'promo_a:50,promo_b:50') throw new Error(`the campaign's steps: ${JSON.stringify(detail.steps)}`);
  const row = card(`campaign-row-${made.id}`);
  await row.and(page.locator('[data-status="draft"]')).waitFor();
  await card(`campaign-pause-${made.id}`).waitFor({ state: 'detached' });
  await card(`campaign-start-${made.id}`).click();
  await card('flash').filter({ hasText: /Promo Xenia: Campaign running/ }).waitFor();
  log('campaigns: a two-variant campaign made from the saved segment and started on the page');

  // The page's auto-refresh follows it to `finished`.
  await card('campaign-detail-status').and(page.locator('[data-status="finished"]')).waitFor({ timeout: 60_000 });
  await row.and(page.locator('[data-status="finished"]')).waitFor();
  if ((await row.locator('button[data-testid^="campaign-start-"], button[data-testid^="campaign-pause-"], '
    + 'button[data-testid^="campaign-resume-"], button[data-testid^="campaign-cancel-"]').count()) !== 0) {
    throw new Error('a finished campaign still offers actions');
  }
  const results = (await call('GET', `/campaigns/${made.id}`, undefined, [200])).json.data.results;
  const num = async (id) => Number((await card(id).textContent()).trim());
  let sent = 0, recipients = 0;
  for (const v of [0, 1]) {
    const r = card(`result-row-0-${v}`);
    await r.waitFor();
    if ((await r.getAttribute('data-holdout')) !== 'false') throw new Error(`variant ${v} is marked holdout`);
    if (!(await r.innerText()).includes(v === 0 ? 'promo_a' : 'promo_b')) throw new Error(`variant ${v} row: ${await r.innerText()}`);
    const shown = { recipients: await num(`result-0-${v}-recipients`), sent: await num(`result-0-${v}-sent`) };
    // The API lists a variant only once it has recipients; the page shows it with zeros before.
    const api0 = results.find((x) => x.step === 0 && x.variant === v) || { recipients: 0, sent: 0 };
    if (api0.recipients !== shown.recipients || api0.sent !== shown.sent) {
      throw new Error(`variant ${v}: the page shows ${JSON.stringify(shown)}, the API ${JSON.stringify(api0)}`);
    }
    if (shown.recipients > 0 && (await card(`result-0-${v}-sent-rate`).textContent()).trim() !== '100 %') {
      throw new Error(`variant ${v} sent rate: ${await card(`result-0-${v}-sent-rate`).textContent()}`);
    }
    sent += shown.sent;
    recipients += shown.recipients;
  }
  if ((await card('campaign-results').locator('tbody tr').count()) !== 2) throw new Error('the results table has other rows than the two variants');
  if (recipients !== N || sent !== recipients) throw new Error(`results: ${sent} sent of ${recipients} recipients`);
  const campaignCalls = gw.requests.slice(sentBefore).filter((r) => phones.some((p) => r.body.includes(p)));
  if (campaignCalls.length !== N) throw new Error(`the gateway got ${campaignCalls.length} campaign messages, want ${N}`);
  // What the gateway got per template is what the table shows per variant.
  const texts = campaignCalls.map((r) => JSON.parse(r.body).body || '');
  const gotA = texts.filter((t) => t.startsWith('Halo Pelanggan Kampanye') && t.includes('promo A')).length;
  const gotB = texts.filter((t) => t.startsWith('Halo Pelanggan Kampanye') && t.includes('promo B')).length;
  if (gotA !== await num('result-0-0-sent') || gotB !== await num('result-0-1-sent')) {
    throw new Error(`the gateway got ${gotA} promo A and ${gotB} promo B messages: ${JSON.stringify(texts.slice(0, 3))}`);
  }
  log(`campaigns: finished; results per variant ${results.map((r) => `${r.variant}: ${r.sent}/${r.recipients} sent`).join(', ')}`);

  // Scheduled → paused → scheduled on the page; a stale Pause after a cancel elsewhere → the 409's message.
  // Auto-refresh off meanwhile, so that the row the test clicks is the one it saw.
  await card('auto-refresh').uncheck();
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString();
  const later = (await call('POST', '/campaigns', { name: 'Promo besok', segment_id: segment.id, start_at: tomorrow,
    steps: [{ variants: [{ template_key: 'promo_a', weight: 1 }] }] }, [201])).json.data;
  await card('refresh').click();
  const laterRow = card(`campaign-row-${later.id}`);
  await laterRow.and(page.locator('[data-status="draft"]')).waitFor();
  await card(`campaign-start-${later.id}`).click();
  await laterRow.and(page.locator('[data-status="scheduled"]')).waitFor();
  await card(`campaign-pause-${later.id}`).click();
  await laterRow.and(page.locator('[data-status="paused"]')).waitFor();
  await card(`campaign-resume-${later.id}`).click();
  await laterRow.and(page.locator('[data-status="scheduled"]')).waitFor();
  await call('POST', `/campaigns/${later.id}/cancel`, undefined, [200]);
  await card(`campaign-pause-${later.id}`).click();
  await card('flash').filter({ hasText: /\(409\): a cancelled campaign cannot pause/ }).waitFor();
  await laterRow.and(page.locator('[data-status="cancelled"]')).waitFor();
  log(`campaigns: start/pause/resume on the page; a stale Pause shows "${(await card('flash').textContent()).trim()}"`);

  // From the form's filters: a holdout beside a template, and a follow-up step; then Cancel on the page.
  await card('campaign-segment').selectOption('');
  await card('campaign-name').fill('Promo lanjutan');
  await card('variant-0-1-holdout').check();
  if (!(await card('variant-0-1-template').isDisabled())) throw new Error('a holdout variant still offers a template');
  await card('variant-0-1-weight').fill('10');
  await card('campaign-step2').check();
  await card('variant-1-0-template').selectOption('promo_b');
  await card('variant-1-0-weight').fill('1');
  await card('campaign-delay').fill('3');
  await card('campaign-only-if').selectOption('no_reply');
  await card('campaign-create').click();
  await card('flash').filter({ hasText: /Campaign "Promo lanjutan" made \(draft\)/ }).waitFor();
  const follow = ((await call('GET', '/campaigns', undefined, [200])).json.data || []).find((c) => c.name === 'Promo lanjutan');
  const followDetail = (await call('GET', `/campaigns/${follow.id}`, undefined, [200])).json.data;
  const shape = JSON.stringify({ segment_id: followDetail.segment_id, source: followDetail.source, filters: followDetail.filters,
    steps: followDetail.steps.map((st) => ({ variants: st.variants, delay_days: st.delay_days, only_if: st.only_if })) });
  const want = JSON.stringify({ segment_id: null, source: 'vehicles', filters: { model: 'xenia kampanye' },
    steps: [{ variants: [{ template_key: 'promo_a', weight: 50 }, { weight: 10, holdout: true }], delay_days: 0, only_if: undefined },
      { variants: [{ template_key: 'promo_b', weight: 1 }], delay_days: 3, only_if: 'no_reply' }] });
  if (shape !== want) throw new Error(`the campaign made on the page: ${shape}, want ${want}`);
  await card('campaign-step-row-1').filter({ hasText: 'only if no_reply' }).waitFor();
  await card(`campaign-cancel-${follow.id}`).click();
  await card(`campaign-row-${follow.id}`).and(page.locator('[data-status="cancelled"]')).waitFor();
  log('campaigns: a holdout and a no_reply follow-up made from the form\'s filters, cancelled on the page');

  // Delete the saved segment: the campaigns keep their copy of its filters.
  await card(`segment-delete-${segment.id}`).click();
  await card(`segment-row-${segment.id}`).waitFor({ state: 'detached' });
  await call('GET', `/segments/${segment.id}`, undefined, [404]);
  if ((await card('campaign-segment').locator(`option[value="${segment.id}"]`).count()) !== 0) throw new Error('a deleted segment is still offered');
  await card(`campaign-row-${made.id}`).filter({ hasText: 'model ~ xenia kampanye' }).waitFor();
  log('campaigns: the saved segment deleted on the page');
  await card('auto-refresh').check();

  // Back to the finished one: its results, and the panel on a phone.
  await card(`campaign-results-${made.id}`).click();
  await card('campaign-detail-title').filter({ hasText: 'Promo Xenia' }).waitFor();
  await card('result-row-0-1').waitFor();
  await card('segment-preview').click();
  await card('segment-preview-count').filter({ hasText: new RegExp(`^${N}$`) }).waitFor();
  const overflow = await page.evaluate(() => {
    const c = document.getElementById('campaigns-card');
    const wide = Array.from(c.querySelectorAll('button, input, select, td, th, .variant, .scroll, fieldset'))
      .filter((e) => e.offsetParent !== null && e.getBoundingClientRect().right > window.innerWidth + 1)
      .map((e) => `${e.tagName}.${e.className} ${e.getAttribute('data-testid') || ''} ${Math.round(e.getBoundingClientRect().right)}`);
    return { cardWidth: c.scrollWidth, clientWidth: c.clientWidth, pageWidth: document.documentElement.scrollWidth, wide };
  });
  if (overflow.wide.length || overflow.cardWidth > overflow.clientWidth + 1 || overflow.pageWidth > 391) {
    throw new Error(`the campaigns panel is wider than a phone: ${JSON.stringify(overflow)}`);
  }
  await card('campaigns-card').screenshot({ path: path.join(path.dirname(SCREENSHOT), 'ops-ui-campaigns-phone.png') });
  await page.setViewportSize({ width: 1280, height: 900 });
  await card('campaigns-card').screenshot({ path: path.join(path.dirname(SCREENSHOT), 'ops-ui-campaigns.png') });
  log('campaigns: the panel fits a 390 px wide screen');
}

async function main(cleanup) {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} not found: run \`cargo build\` first (or set BENGKEL_BIN)`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium (scripts/browser-test does)`);

  const gwPort = await freePort();
  const gw = await startGateway(gwPort);
  cleanup.push(() => new Promise((r) => { gw.server.closeAllConnections?.(); gw.server.close(() => r()); }));
  log(`fake gateway on 127.0.0.1:${gwPort} (answers 400 "invalid number" for now)`);

  const dbName = `bengkel_browser_${process.pid}_${Date.now().toString(36)}`;
  await psql(`CREATE DATABASE ${dbName}`);
  cleanup.push(async () => {
    await psql(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    log(`dropped database ${dbName}`);
  });
  log(`created database ${dbName}`);

  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const workdir = fs.mkdtempSync(path.join(os.tmpdir(), 'bengkel-browser-'));
  cleanup.push(() => fs.rmSync(workdir, { recursive: true, force: true }));
  const env = {
    ...process.env,
    DATABASE_URL: dbUrl(dbName),
    BIND_ADDR: `127.0.0.1:${port}`,
    JWT_SECRET,
    STARSENDER_API_KEY: 'test-key',
    STARSENDER_API_URL: `http://127.0.0.1:${gwPort}/api/send`,
    SEND_RATE_PER_SECOND: '0',
    // As in the Rust tests: no quiet hours, no spacing (the policy checks set spacing on the page).
    SEND_WINDOW: '00:00-24:00',
    RECIPIENT_MIN_INTERVAL_SECS: '0',
    DATA_DIR: path.join(workdir, 'data'),
    // The webhooks panel's receiver listens on 127.0.0.1 over plain http.
    WEBHOOK_ALLOW_PRIVATE: 'true',
    // The console checks post a customer's message through StarSender's webhook.
    INBOUND_STARSENDER_TOKEN: INBOUND_TOKEN,
  };
  const serviceLog = path.join(workdir, 'service.log');
  const out = fs.openSync(serviceLog, 'w');
  // cwd = an empty directory, so that no `.env` of the checkout changes the configuration.
  const svc = spawn(BIN, ['serve'], { cwd: workdir, env, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  let exited = null;
  svc.on('exit', (code, signal) => { exited = { code, signal }; });
  const serviceTail = () => {
    try { return fs.readFileSync(serviceLog, 'utf8').replace(/\x1b\[[0-9;]*m/g, '').split('\n').slice(-40).join('\n'); } catch { return ''; }
  };
  cleanup.push(async () => {
    if (exited) return;
    svc.kill('SIGTERM');
    const deadline = Date.now() + 10_000;
    while (!exited && Date.now() < deadline) await sleep(100);
    if (!exited) svc.kill('SIGKILL');
    while (!exited) await sleep(50);
    log('service stopped');
  });
  cleanup.serviceTail = serviceTail;

  await waitFor('GET /health/ready = 200', 60_000, async () => {
    if (exited) throw Object.assign(new Error(`service exited early (${JSON.stringify(exited)})`), { fatal: true });
    const r = await fetch(`${base}/health/ready`).catch(() => null);
    return r && r.status === 200;
  }).catch((e) => { throw new Error(`${e.message}\n--- service log ---\n${serviceTail()}`); });
  log(`service ready on ${base}`);

  const { stdout } = await execFileP(BIN, ['token', '--sub', 'browser', '--role', 'ops'], { cwd: workdir, env, timeout: 30_000 });
  const token = stdout.trim().split('\n').pop().trim();
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) throw new Error(`token command printed no JWT: ${JSON.stringify(stdout)}`);

  // One message; the gateway's 400 fails it at once.
  const sent = await api(base, token, 'POST', '/whatsapp/send', { to: '08123456789', body: 'browser test' });
  if (sent.status !== 202 || !sent.json?.data?.id) throw new Error(`POST /whatsapp/send → ${sent.status} ${sent.text}`);
  const messageId = sent.json.data.id;
  const failed = await waitFor(`message ${messageId} to be failed`, 20_000, async () => {
    const r = await api(base, token, 'GET', `/whatsapp/messages/${messageId}`);
    return r.json?.data?.status === 'failed' ? r.json.data : null;
  });
  const jobId = failed.job_id;
  if (!jobId) throw new Error(`message ${messageId} has no job_id: ${JSON.stringify(failed)}`);
  log(`message ${messageId} failed (job ${jobId}, last_error ${JSON.stringify(failed.last_error)})`);

  // ---------- the browser ----------
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  cleanup.push(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(15_000);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const externalRequests = [];
  page.on('request', (req) => { if (!req.url().startsWith(base) && !req.url().startsWith('data:')) externalRequests.push(req.url()); });
  // The pages are served with a Content-Security-Policy: anything it blocks is a console error.
  const cspViolations = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy/i.test(msg.text())) cspViolations.push(msg.text());
  });
  const checkSecurityHeaders = (response, what) => {
    const h = response.headers();
    const csp = h['content-security-policy'] || '';
    if (!csp.includes("frame-ancestors 'none'") || !csp.includes("script-src 'sha256-")) {
      throw new Error(`${what} has no (or a weak) Content-Security-Policy: ${JSON.stringify(csp)}`);
    }
    if (h['x-frame-options'] !== 'DENY' || h['x-content-type-options'] !== 'nosniff') {
      throw new Error(`${what} lacks X-Frame-Options/X-Content-Type-Options: ${JSON.stringify(h)}`);
    }
  };

  const ui = await page.goto(`${base}/ops/ui`);
  if (ui.status() !== 200) throw new Error(`GET /ops/ui → ${ui.status()}`);
  checkSecurityHeaders(ui, 'GET /ops/ui');

  // A wrong token is refused with a clear message and the token form comes back.
  await page.getByTestId('token-input').fill('not-a-valid-token');
  await page.getByTestId('token-save').click();
  await page.getByTestId('flash').filter({ hasText: /reject/i }).waitFor();
  await page.getByTestId('token-input').waitFor();
  log(`wrong token refused: "${(await page.getByTestId('flash').textContent()).trim()}"`);

  await page.getByTestId('token-input').fill(token);
  await page.getByTestId('token-save').click();
  const queueRow = page.getByTestId(`queue-row-${QUEUE}`);
  await queueRow.waitFor();
  await page.getByTestId('status-filter').selectOption('failed');
  const row = page.getByTestId(`job-row-${jobId}`);
  await row.waitFor();
  const rowText = await row.textContent();
  if (!rowText.includes(messageId)) throw new Error(`job row does not show message ${messageId}: ${rowText}`);
  // The summary counts the failed job (auto-refresh runs every 5 s; allow one round).
  await waitFor('the queue summary to count 1 failed job', 12_000, async () => {
    const cells = await queueRow.locator('td').allTextContents();
    return cells[3]?.trim() === '1';
  });
  log('failed job visible in the list and in the summary');

  // Detail panel, then the screenshot with the failed job in the list.
  await page.getByTestId(`job-link-${jobId}`).click();
  const detail = page.getByTestId('job-detail');
  await detail.getByText('browser test').first().waitFor();
  await detail.getByText('Payload').waitFor();
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  log(`screenshot saved to ${path.relative(ROOT, SCREENSHOT)}`);

  // The gateway accepts from now on; requeue from the page.
  gw.failing = false;
  await page.getByTestId(`requeue-${jobId}`).click();
  await page.getByTestId('flash').filter({ hasText: /requeued/i }).waitFor();
  log(`clicked requeue: "${(await page.getByTestId('flash').textContent()).trim()}"`);
  await waitFor('the job row to leave the failed list', 15_000, async () => {
    if ((await row.count()) === 0) return true;
    await page.getByTestId('refresh').click();
    return false;
  }, 1000);
  log('job row left the failed list');

  const sentMessage = await waitFor(`message ${messageId} to be sent`, 15_000, async () => {
    const r = await api(base, token, 'GET', `/whatsapp/messages/${messageId}`);
    return r.json?.data?.status === 'sent' ? r.json.data : null;
  });
  log(`message ${messageId} is ${sentMessage.status} (attempts ${sentMessage.attempts})`);
  const job = await waitFor(`job ${jobId} to be done`, 10_000, async () => {
    const r = await api(base, token, 'GET', `/ops/jobs/${jobId}`);
    return r.json?.data?.status === 'done' ? r.json.data : null;
  });
  log(`job ${job.id} is ${job.status}`);
  const calls = gw.requests.map((r) => (r.failing ? 400 : 200));
  if (calls.join(',') !== '400,200') throw new Error(`gateway saw ${calls.length} calls (${calls}); expected 400 then 200`);

  // /docs works under its policy too: the operations come from /openapi.json and one can be sent.
  const docs = await page.goto(`${base}/docs`);
  if (docs.status() !== 200) throw new Error(`GET /docs → ${docs.status()}`);
  checkSecurityHeaders(docs, 'GET /docs');
  const health = page.locator('details', { has: page.locator('span.p', { hasText: /^\/health$/ }) });
  await health.locator('summary').click();
  await health.getByRole('button', { name: 'Send' }).click();
  await health.locator('pre').filter({ hasText: /^200 / }).waitFor();
  const operations = await page.locator('details').count();
  log(`/docs lists ${operations} operations and sent GET /health from the page`);

  const pageChecks = () => {
    if (pageErrors.length) throw new Error(`JavaScript errors in the page: ${pageErrors.join(' | ')}`);
    if (cspViolations.length) throw new Error(`Content-Security-Policy violations: ${cspViolations.join(' | ')}`);
    if (externalRequests.length) throw new Error(`the page fetched outside the service: ${externalRequests.join(', ')}`);
  };
  pageChecks();
  log('requeue flow, /docs and the page checks passed; now the console');

  await consoleChecks({ page, base, token, gw });
  pageChecks();
  log('console passed; now the delivery-policy cards');

  await deliveryPolicyChecks({ page, base, token });
  pageChecks();
  log('delivery-policy cards passed; now the templates panel');

  await templatesChecks({ page, base, token });
  pageChecks();
  log('templates panel passed; now the messages card');

  await messagesChecks({ page, base, token });
  pageChecks();
  log('messages card passed; now the webhooks panel');

  await webhooksChecks({ page, base, token, cleanup });
  pageChecks();
  log('webhooks panel passed; now the campaigns panel');

  await campaignsChecks({ page, base, token, gw });
  pageChecks();
  log('campaigns panel passed');
}

const cleanup = [];
let finishing = false;
async function finish(failure) {
  if (finishing) return;
  finishing = true;
  // Read the service's log before the cleanup removes it.
  const tail = failure && cleanup.serviceTail && !String(failure.message).includes('--- service log ---')
    ? cleanup.serviceTail() : '';
  for (const step of cleanup.reverse()) {
    try {
      await step();
    } catch (e) {
      console.error(`cleanup: ${e.message}`);
    }
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (failure) {
    if (tail) console.log(`--- service log (tail) ---\n${tail}\n---`);
    console.log(`FAIL: ${failure.message} (${secs} s)`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  console.log(`PASS: ops UI requeue of a failed send, delivery-policy cards, suppressions, templates, messages, webhooks, the console and campaigns (${secs} s)`);
  console.log('1 passed, 0 failed');
  process.exit(0);
}
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => finish(new Error(`interrupted by ${sig}`)));
try {
  await main(cleanup);
} catch (e) {
  await finish(e);
}
await finish(null);
