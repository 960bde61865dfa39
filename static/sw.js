// podo service worker: keeps the app shell for offline starts, shows web push notifications and
// focuses or opens the app on click.
//
// The shell (every file of the web client but this one and the manifest's screenshots) is stored
// at install in a cache named after SHELL_VERSION, a hash of those files' contents. A deployment
// that changes any of them changes the version (the browser test `shell_version` fails until
// it is updated and prints the new value), so this file changes, the browser installs the new
// worker at the next load, which stores the new shell whole and deletes the old cache.
//
// Requests: navigations and shell files go to the network first (online, the deployed files are
// used at once) and fall back to the stored shell when the server cannot be reached or takes
// longer than NETWORK_TIMEOUT_MS. Everything else, the API (`/api/...`, its board stream and
// chat socket), `/healthz` and `/metrics` included, is left to the network and never stored.
const SHELL_VERSION = '334dc3f44332370a';
const CACHE = `podo-shell-${SHELL_VERSION}`;
const NETWORK_TIMEOUT_MS = 4000;
const SHELL = [
  '/index.html',
  '/manifest.webmanifest',
  '/css/app.css',
  '/js/api.js',
  '/js/app.js',
  '/js/auth.js',
  '/js/board-feed.js',
  '/js/board.js',
  '/js/calendar.js',
  '/js/chat-client.js',
  '/js/chat.js',
  '/js/connectivity.js',
  '/js/dom.js',
  '/js/grapes.js',
  '/js/last-known.js',
  '/js/missions.js',
  '/js/pairing.js',
  '/js/push.js',
  '/js/wishes.js',
  '/media/apple-touch-icon.png',
  '/media/grape-cheer.svg',
  '/media/grape-happy.svg',
  '/media/grape-love.svg',
  '/media/grape-sad.svg',
  '/media/grape-sleepy.svg',
  '/media/grape-thanks.svg',
  '/media/icon-192.png',
  '/media/icon-512.png',
  '/media/icon-maskable-512.png',
  '/media/icon.svg',
];
const SHELL_PATHS = new Set(SHELL);

const ROUTE_BY_KIND = { chat: '/#/chat', wish: '/#/wishes', grant: '/#/board', mission: '/#/missions' };

self.addEventListener('install', (event) => {
  // `reload`: past the HTTP cache, so the stored shell is the one deployed now. If any file
  // fails, the install fails and the previous shell stays in use.
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL.map((path) => new Request(path, { cache: 'reload' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith('podo-shell-') && name !== CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const { request } = event;
  if (request.method !== 'GET') return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (request.mode === 'navigate') {
    if (url.pathname === '/' || url.pathname === '/index.html') event.respondWith(networkFirst(request, '/index.html'));
    return;
  }
  if (SHELL_PATHS.has(url.pathname)) event.respondWith(networkFirst(request, url.pathname));
});

/** The network's answer (any status), else the stored shell file. */
async function networkFirst(request, path) {
  const network = fetch(request);
  network.catch(() => {}); // a late failure after the timeout is not an error
  const timeout = new Promise((resolve) => setTimeout(() => resolve(null), NETWORK_TIMEOUT_MS));
  try {
    const response = await Promise.race([network, timeout]);
    if (response) return response;
  } catch {
    /* unreachable: the stored copy below */
  }
  const cache = await caches.open(CACHE);
  const stored = await cache.match(path);
  return stored || network;
}

/** The app routes with the hash; a plain path such as `/chat` becomes `/#/chat`. */
function appUrl(data) {
  let url = typeof data.url === 'string' && data.url ? data.url : ROUTE_BY_KIND[data.kind] || '/';
  if (url.startsWith('/') && !url.includes('#') && url !== '/') url = `/#${url}`;
  return new URL(url, self.location.origin).href;
}

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = { body: event.data ? event.data.text() : '' };
  }
  const title = data.title || '포도';
  event.waitUntil(
    self.registration.showNotification(title, {
      body: data.body || '',
      icon: '/media/icon-192.png',
      badge: '/media/icon-192.png',
      tag: data.kind || 'podo',
      renotify: true,
      data: { url: appUrl(data) },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const target = (event.notification.data && event.notification.data.url) || new URL('/', self.location.origin).href;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      for (const client of windows) {
        if (new URL(client.url).origin === self.location.origin) {
          await client.focus();
          if ('navigate' in client) await client.navigate(target).catch(() => {});
          return;
        }
      }
      await self.clients.openWindow(target);
    })(),
  );
});
