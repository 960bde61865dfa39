// podo service worker: shows web push notifications and focuses or opens the app on click.
const ROUTE_BY_KIND = { chat: '/#/chat', wish: '/#/wishes', grant: '/#/board', mission: '/#/missions' };

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

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
      icon: '/media/icon.svg',
      badge: '/media/icon.svg',
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
