// Whether the server can be reached, judged from evidence rather than `navigator.onLine` (which
// says nothing about a server that is down): any HTTP answer means reachable; a request that
// failed to connect, a dropped board stream or chat socket make us ask `/healthz`, and only when
// that fails too are we offline. While offline `/healthz` is asked again every few seconds.
//
// Offline, the banner under the top bar says so (and why some buttons are off), and every
// control marked `data-needs-server` is disabled with that reason; chat stays usable (its outbox
// sends when the connection returns).
const PROBE_MS = 2500;
const REASON = '오프라인이라 지금은 할 수 없어요. 연결되면 다시 할 수 있어요.';
const BANNER = '오프라인 · 마지막으로 받은 내용을 보여 드려요. 연결되면 포도알 주기·붙이기 같은 기능을 다시 쓸 수 있어요.';

let online = true;
let probing = null;
let probeTimer = null;
const listeners = new Set();

export function isOnline() {
  return online;
}

/** `listener(online)` on every change; returns the unsubscribe function. */
export function onConnectivity(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function set(value) {
  clearTimeout(probeTimer);
  if (!value) probeTimer = setTimeout(checkConnection, PROBE_MS);
  if (online === value) return;
  online = value;
  document.documentElement.dataset.connection = value ? 'online' : 'offline';
  applyOffline(document);
  const banner = document.getElementById('offline-banner');
  if (banner) banner.textContent = value ? '' : BANNER;
  measureBanner();
  for (const listener of listeners) {
    try {
      listener(value);
    } catch (error) {
      console.error(error);
    }
  }
}

/** The server answered something (any status). */
export function reportReachable() {
  set(true);
}

/** A request could not reach the server: find out whether it is down or that was a blip. */
export function reportUnreachable() {
  checkConnection();
}

/** Asks `/healthz` (never cached by the service worker); any answer means reachable. */
export function checkConnection() {
  if (!probing) {
    probing = fetch('/healthz', { cache: 'no-store' })
      .then(() => true, () => false)
      .then((reachable) => {
        probing = null;
        set(reachable);
        return reachable;
      });
  }
  return probing;
}

/** Disables (offline) or re-enables (online) the controls under `root` that need the server. */
export function applyOffline(root) {
  if (!online) {
    for (const el of root.querySelectorAll('[data-needs-server]:not([data-offline-disabled])')) disable(el);
    return;
  }
  for (const el of root.querySelectorAll('[data-offline-disabled]')) {
    if (el.dataset.offlineDisabled === 'yes') el.disabled = false;
    if (el.dataset.titleBefore) el.title = el.dataset.titleBefore;
    else el.removeAttribute('title');
    el.removeAttribute('aria-describedby');
    delete el.dataset.offlineDisabled;
    delete el.dataset.titleBefore;
  }
}

function disable(el) {
  el.dataset.offlineDisabled = el.disabled ? 'kept' : 'yes';
  el.disabled = true;
  el.dataset.titleBefore = el.getAttribute('title') || '';
  el.title = REASON;
  el.setAttribute('aria-describedby', 'offline-banner');
}

/** A control that `busy()` just re-enabled stays off while offline. */
export function keepOfflineState(el) {
  if (!online && el.hasAttribute('data-needs-server')) {
    if (el.dataset.offlineDisabled) {
      el.disabled = true;
      el.dataset.offlineDisabled = 'yes';
    } else {
      disable(el);
    }
  }
}

/** Screens that fill the window (chat) leave room for the banner: `--banner` is its height. */
function measureBanner() {
  const banner = document.getElementById('offline-banner');
  const height = banner ? banner.getBoundingClientRect().height : 0;
  document.documentElement.style.setProperty('--banner', `${Math.ceil(height)}px`);
}

/** Starts watching: new screens get their controls disabled too while offline. */
export function initConnectivity() {
  document.documentElement.dataset.connection = 'online';
  window.addEventListener('resize', measureBanner);
  window.addEventListener('offline', () => checkConnection());
  window.addEventListener('online', () => checkConnection());
  new MutationObserver(() => {
    if (!online) applyOffline(document);
  }).observe(document.body, { childList: true, subtree: true });
}
