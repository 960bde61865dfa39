// The chat connection: WebSocket on /api/chat/ws with automatic reconnect, `resume` after the
// last message seen, an outbox re-sent with the same client_id until acked (kept across reloads),
// presence, and visibility frames. History pages come from GET /api/chat/messages.
//
// Offline, the newest messages seen are shown from the last-known copy, and what is typed waits
// in the outbox; when the server is back the socket reconnects and the outbox goes out with the
// same client_ids, so each message is stored once however often it was sent. A `not_stored` or
// `too_many_pending` error sends the outbox again after a short, growing pause.
import { get, getToken, randomId } from './api.js';
import { checkConnection, onConnectivity } from './connectivity.js';
import { recall, remember } from './last-known.js';

const PAGE = 50;
const MAX_RESUME_GAP = 200;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10000;
const RESEND_MIN_MS = 500;
const RESEND_MAX_MS = 8000;
/** Messages kept for an offline start. */
const KEEP = 100;
export const MAX_TEXT = 2000;

export class ChatClient {
  constructor(userId) {
    this.userId = userId;
    this.messages = new Map(); // seq -> message
    this.lastSeq = 0; // highest seq held
    this.hasOlder = false;
    this.present = new Set();
    this.status = 'idle'; // idle | connecting | online | offline
    this.available = true; // false while the server has no chat
    this.listeners = new Set();
    this.outboxKey = `podo.outbox.${userId}`;
    this.outbox = loadOutbox(this.outboxKey);
    this.ws = null;
    this.running = false;
    this.attempts = 0;
    this.reconnectTimer = null;
    this.loadingOlder = false;
    this.resendTimer = null;
    this.resends = 0;
    this.stopConnectivity = null;
    this.onVisibility = () => this.sendFrame({ type: 'visibility', visible: document.visibilityState === 'visible' });
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.setStatus('offline');
    const last = recall(userId, 'chat');
    if (last && Array.isArray(last.messages)) {
      this.addAll(last.messages);
      this.hasOlder = Boolean(last.hasOlder);
    }
  }

  /** Keeps the newest messages for the next offline start. */
  saveLastKnown() {
    const messages = this.sorted().slice(-KEEP);
    remember(this.userId, 'chat', { messages, hasOlder: this.hasOlder || messages.length < this.messages.size });
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(change) {
    for (const listener of this.listeners) listener(change);
  }

  setStatus(status) {
    if (this.status !== status) {
      this.status = status;
      this.emit({ kind: 'status' });
    }
  }

  sorted() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  async start() {
    if (this.running) return;
    this.running = true;
    document.addEventListener('visibilitychange', this.onVisibility);
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    this.stopConnectivity = onConnectivity((online) => (online ? this.reconnectNow() : this.setStatus('offline')));
    if (!this.messages.size) await this.loadNewest();
    this.connect();
  }

  stop() {
    this.running = false;
    document.removeEventListener('visibilitychange', this.onVisibility);
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    if (this.stopConnectivity) this.stopConnectivity();
    this.stopConnectivity = null;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.resendTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.present.clear();
    this.status = 'idle';
  }

  async loadNewest() {
    try {
      const { messages } = await get(`/chat/messages?limit=${PAGE}`);
      this.available = true;
      this.messages.clear();
      this.lastSeq = 0;
      this.addAll(messages);
      this.hasOlder = messages.length > 0 && messages[0].seq > 1;
      this.saveLastKnown();
      this.emit({ kind: 'reset' });
    } catch (error) {
      if (error.missing) this.available = false;
      this.emit({ kind: 'status' });
    }
  }

  async loadOlder() {
    if (this.loadingOlder || !this.hasOlder) return;
    const oldest = Math.min(...this.messages.keys());
    this.loadingOlder = true;
    try {
      const { messages } = await get(`/chat/messages?before_seq=${oldest}&limit=${PAGE}`);
      this.addAll(messages);
      this.hasOlder = messages.length === PAGE && messages[0].seq > 1;
      this.emit({ kind: 'older' });
    } catch {
      /* offline: scrolling up again retries */
    } finally {
      this.loadingOlder = false;
    }
  }

  addAll(messages) {
    for (const message of messages) this.add(message);
  }

  add(message) {
    this.messages.set(message.seq, message);
    this.lastSeq = Math.max(this.lastSeq, message.seq);
    if (message.sender_id === this.userId) this.dropFromOutbox(message.client_id);
  }

  connect() {
    if (!this.running || this.ws) return;
    const token = getToken();
    if (!token) return;
    this.setStatus(navigator.onLine === false ? 'offline' : 'connecting');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/api/chat/ws?access_token=${encodeURIComponent(token)}`);
    this.ws = ws;
    ws.addEventListener('message', (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handle(frame);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.present.clear();
      if (!this.running) return;
      if (event.code === 4001) {
        // The token was revoked or expired: one plain request shows a 401 and sends the user to
        // log in; reconnecting with this token would only be refused.
        get('/me').catch(() => {});
        return;
      }
      this.setStatus(navigator.onLine === false ? 'offline' : 'connecting');
      if (event.code !== 1000) checkConnection();
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    clearTimeout(this.reconnectTimer);
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempts) * (0.75 + Math.random() * 0.5);
    this.attempts += 1;
    if (this.attempts % 4 === 0) {
      // Refused several times: an expired token shows as 401 here and sends the user to log in.
      get('/me').catch(() => {});
      if (!this.messages.size) this.loadNewest();
    }
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (!this.running) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      // The socket survived the network change; make sure nothing was missed.
      this.sendFrame({ type: 'resume', after_seq: this.lastSeq });
      this.flushOutbox();
      return;
    }
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close();
    }
    clearTimeout(this.reconnectTimer);
    this.attempts = 0;
    this.connect();
  }

  async handle(frame) {
    switch (frame.type) {
      case 'hello': {
        this.attempts = 0;
        this.available = true;
        this.present = new Set(frame.present);
        if (document.visibilityState !== 'visible') this.onVisibility();
        if (frame.last_seq - this.lastSeq > MAX_RESUME_GAP) await this.loadNewest();
        this.sendFrame({ type: 'resume', after_seq: this.lastSeq });
        this.flushOutbox();
        this.setStatus('online');
        this.emit({ kind: 'presence' });
        break;
      }
      case 'message':
        this.add(frame);
        this.saveLastKnown();
        this.emit({ kind: 'message', message: frame });
        break;
      case 'ack':
        this.resends = 0;
        this.dropFromOutbox(frame.client_id);
        this.emit({ kind: 'ack' });
        break;
      case 'presence':
        if (frame.present) this.present.add(frame.user_id);
        else this.present.delete(frame.user_id);
        this.emit({ kind: 'presence' });
        break;
      case 'resumed':
        this.emit({ kind: 'resumed' });
        break;
      case 'error':
        // Nothing was stored: send again (the same client_ids; the server stores each once).
        if (frame.code === 'not_stored' || frame.code === 'too_many_pending') this.resendSoon();
        this.emit({ kind: 'error', frame });
        break;
      default:
        break;
    }
  }

  sendFrame(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  send(text) {
    const entry = { client_id: randomId(`${this.userId}-`), text, created_at: new Date().toISOString() };
    this.outbox.push(entry);
    this.saveOutbox();
    if (this.status === 'online') this.sendFrame({ type: 'send', client_id: entry.client_id, text });
    this.emit({ kind: 'pending' });
  }

  resendSoon() {
    clearTimeout(this.resendTimer);
    const delay = Math.min(RESEND_MAX_MS, RESEND_MIN_MS * 2 ** this.resends);
    this.resends += 1;
    this.resendTimer = setTimeout(() => {
      this.flushOutbox();
      this.emit({ kind: 'pending' });
    }, delay);
  }

  flushOutbox() {
    for (const entry of this.outbox) this.sendFrame({ type: 'send', client_id: entry.client_id, text: entry.text });
  }

  dropFromOutbox(clientId) {
    const before = this.outbox.length;
    this.outbox = this.outbox.filter((e) => e.client_id !== clientId);
    if (this.outbox.length !== before) this.saveOutbox();
  }

  saveOutbox() {
    try {
      localStorage.setItem(this.outboxKey, JSON.stringify(this.outbox));
    } catch {
      /* storage full or disabled: the outbox still lives in memory */
    }
  }
}

function loadOutbox(key) {
  try {
    const value = JSON.parse(localStorage.getItem(key) || '[]');
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}
