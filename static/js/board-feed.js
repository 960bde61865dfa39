// The family's grape board, live over Server-Sent Events (/api/board/events). No polling: every
// (re)connect starts with the full current state, and EventSource reconnects by itself after the
// server's `retry: 2000`. Listeners get the latest board; a state older than the one shown is
// ignored (versions only grow).
import { get, getToken } from './api.js';
import { checkConnection } from './connectivity.js';
import { recall, remember } from './last-known.js';

/** Back-off for a stream the browser gave up on (e.g. 401 after the token expired). */
const REOPEN_MS = [2000, 5000, 10000, 30000];

export class BoardFeed {
  constructor(userId) {
    this.userId = userId;
    this.board = null;
    this.version = -1;
    this.loaded = false;
    // The board last seen (offline start): shown at once, replaced by the server's first state
    // (whatever its version: the saved one may come from another database).
    const last = recall(userId, 'board');
    if (last !== undefined) {
      this.board = last;
      this.loaded = true;
    }
    this.listeners = new Set();
    this.source = null;
    this.reopenTimer = null;
    this.failures = 0;
    this.stopped = false;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    if (this.loaded) listener(this.board);
    return () => this.listeners.delete(listener);
  }

  start() {
    this.stopped = false;
    this.openStream();
  }

  stop() {
    this.stopped = true;
    if (this.source) this.source.close();
    this.source = null;
    clearTimeout(this.reopenTimer);
    this.listeners.clear();
  }

  /** A board from the stream, or from an HTTP answer (grant, attach, create). */
  apply(board, version) {
    if (version < this.version) return;
    this.version = version;
    this.board = board;
    this.loaded = true;
    remember(this.userId, 'board', board);
    for (const listener of this.listeners) listener(board);
  }

  applyBoard(board) {
    if (board) this.apply(board, board.version);
  }

  openStream() {
    const token = getToken();
    if (this.stopped || !token) return;
    const source = new EventSource(`/api/board/events?access_token=${encodeURIComponent(token)}`);
    this.source = source;
    source.addEventListener('open', () => {
      this.failures = 0;
      document.documentElement.dataset.boardLive = 'sse';
    });
    source.addEventListener('board', (event) => {
      const data = JSON.parse(event.data);
      const version = Number(event.lastEventId);
      this.apply(data.board, Number.isFinite(version) ? version : this.version);
    });
    source.addEventListener('error', () => {
      document.documentElement.dataset.boardLive = 'reconnecting';
      checkConnection();
      if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
      // Refused: one plain request tells why (a 401 sends the user to log in), then retry later.
      source.close();
      this.source = null;
      get('/board').catch(() => {});
      const wait = REOPEN_MS[Math.min(this.failures, REOPEN_MS.length - 1)];
      this.failures += 1;
      clearTimeout(this.reopenTimer);
      this.reopenTimer = setTimeout(() => this.openStream(), wait);
    });
  }
}
