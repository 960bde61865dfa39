// Web push: the service worker, and the "turn on notifications" button that subscribes with the
// server's VAPID key (GET /api/push/public-key, POST /api/push/subscriptions).
import { del, get, post } from './api.js';
import { showError, toast } from './dom.js';

const supported = () => 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;

export async function registerServiceWorker() {
  if (!('serviceWorker' in navigator)) return null;
  try {
    return await navigator.serviceWorker.register('/sw.js');
  } catch {
    return null;
  }
}

function keyBytes(base64url) {
  const padded = (base64url + '='.repeat((4 - (base64url.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

async function currentSubscription() {
  const registration = await navigator.serviceWorker.getRegistration();
  return registration ? registration.pushManager.getSubscription() : null;
}

export async function enableNotifications() {
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') {
    toast('브라우저 설정에서 알림을 허용해 주세요.', 'error');
    return false;
  }
  const { public_key: publicKey } = await get('/push/public-key');
  const registration = (await navigator.serviceWorker.getRegistration()) || (await registerServiceWorker());
  await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(publicKey) });
  }
  const json = subscription.toJSON();
  await post('/push/subscriptions', { endpoint: json.endpoint, keys: { p256dh: json.keys.p256dh, auth: json.keys.auth } });
  toast('알림을 켰어요! 🔔');
  return true;
}

/** On logout this device should stop getting the previous user's notifications. */
export async function disablePushOnLogout() {
  if (!supported()) return;
  try {
    const subscription = await currentSubscription();
    if (!subscription) return;
    await del('/push/subscriptions', { endpoint: subscription.endpoint }).catch(() => {});
    await subscription.unsubscribe();
  } catch {
    /* best effort */
  }
}

export function initPushButton(button) {
  if (!supported()) return;
  button.hidden = false;
  const refresh = async () => {
    const on = Notification.permission === 'granted' && Boolean(await currentSubscription().catch(() => null));
    button.classList.toggle('on', on);
    button.title = on ? '알림이 켜져 있어요' : '알림 켜기';
  };
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await enableNotifications();
    } catch (error) {
      if (error && error.missing) toast('알림 기능을 준비하고 있어요.', 'error');
      else showError(error);
    } finally {
      button.disabled = false;
      refresh();
    }
  });
  refresh();
}
