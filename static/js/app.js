// Boot, session and the hash router. Each screen module exports `render(view, ctx)` and may
// return a cleanup function that runs when the user leaves the screen.
import { ApiError, get, getToken, onUnauthorized, post, setToken } from './api.js';
import { h, showError, toast } from './dom.js';
import { BoardFeed } from './board-feed.js';
import * as authScreen from './auth.js';
import * as pairingScreen from './pairing.js';
import * as boardScreen from './board.js';
import * as wishesScreen from './wishes.js';
import * as missionsScreen from './missions.js';
import * as calendarScreen from './calendar.js';
import * as chatScreen from './chat.js';
import { disablePushOnLogout, initPushButton, registerServiceWorker } from './push.js';
import { initConnectivity, isOnline, onConnectivity } from './connectivity.js';
import { forgetAll, recall, remember } from './last-known.js';

const SCREENS = {
  login: authScreen,
  signup: authScreen,
  pair: pairingScreen,
  board: boardScreen,
  wishes: wishesScreen,
  missions: missionsScreen,
  calendar: calendarScreen,
  chat: chatScreen,
};
const PUBLIC = new Set(['login', 'signup']);

const ctx = {
  user: null,
  family: null,
  board: null, // BoardFeed while paired
  navigate,
  signedIn,
  refreshMe,
  logout,
  get partner() {
    if (!this.family || !this.user) return null;
    return this.user.role === 'parent' ? this.family.child : this.family.parent;
  },
};

let cleanup = null;

function navigate(name) {
  const target = `#/${name}`;
  if (location.hash === target) route();
  else location.hash = target;
}

function currentName() {
  const name = location.hash.replace(/^#\/?/, '').split('?')[0];
  return SCREENS[name] ? name : '';
}

function allowed(name) {
  if (!ctx.user) return PUBLIC.has(name) ? name : 'login';
  if (!ctx.family) return name === 'pair' ? name : 'pair';
  if (!name || PUBLIC.has(name) || name === 'pair') return 'board';
  return name;
}

function route() {
  const wanted = currentName();
  const name = allowed(wanted);
  if (name !== wanted) {
    history.replaceState(null, '', `#/${name}`);
  }
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      console.error(error);
    }
    cleanup = null;
  }
  renderChrome(name);
  const view = document.getElementById('view');
  view.replaceChildren();
  view.dataset.screen = name;
  const result = SCREENS[name].render(view, ctx, name);
  if (typeof result === 'function') cleanup = result;
  window.scrollTo(0, 0);
}

function renderChrome(name) {
  const topbar = document.getElementById('topbar');
  const tabbar = document.getElementById('tabbar');
  topbar.hidden = !ctx.user;
  tabbar.hidden = !ctx.family;
  document.body.classList.toggle('with-tabs', Boolean(ctx.family));
  document.body.dataset.role = ctx.user ? ctx.user.role : '';
  if (ctx.user) {
    const who = document.getElementById('whoami');
    who.replaceChildren(
      h('span', { class: `role-chip role-${ctx.user.role}` }, ctx.user.role === 'parent' ? '부모' : '자녀'),
      h('span', { class: 'whoami-name' }, ctx.user.name),
    );
  }
  for (const tab of tabbar.querySelectorAll('a')) {
    const active = tab.dataset.tab === name;
    tab.classList.toggle('active', active);
    if (active) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
}

function updateBadge() {
  const badge = document.getElementById('board-badge');
  const board = ctx.board && ctx.board.board;
  const pending = board && board.status === 'active' && ctx.user && ctx.user.role === 'child' ? board.unattached : 0;
  badge.hidden = !pending;
  badge.textContent = pending ? String(pending) : '';
  badge.setAttribute('aria-label', pending ? `붙일 포도알 ${pending}개` : '');
}

function startFamilyLive() {
  if (ctx.family && !ctx.board) {
    ctx.board = new BoardFeed(ctx.user.id);
    ctx.board.subscribe(updateBadge);
    ctx.board.start();
  }
}

function stopFamilyLive() {
  if (ctx.board) {
    ctx.board.stop();
    ctx.board = null;
  }
  updateBadge();
}

async function refreshMe() {
  const me = await get('/me');
  const changed = !ctx.user || ctx.user.id !== me.user.id || Boolean(ctx.family) !== Boolean(me.family);
  if (changed) stopFamilyLive();
  ctx.user = me.user;
  ctx.family = me.family;
  ctx.stale = false;
  remember('me', 'me', me);
  if (ctx.family) startFamilyLive();
  return me;
}

/**
 * Offline at start: carry on as the user we were, with what we last knew; who we are is asked
 * again as soon as the server answers.
 */
function startFromLastKnown() {
  const me = recall('me', 'me');
  if (!me || !me.user) return false;
  ctx.user = me.user;
  ctx.family = me.family;
  ctx.stale = true;
  if (ctx.family) startFamilyLive();
  return true;
}

/** After login: the token is stored, load who we are and go to the right screen. */
async function signedIn(token) {
  setToken(token);
  await refreshMe();
  navigate(ctx.family ? 'board' : 'pair');
}

async function logout(clearSubscription = true) {
  if (clearSubscription) await disablePushOnLogout();
  stopFamilyLive();
  // Revoke the token on the server too (its streams end there); logging out here does not
  // depend on it.
  if (getToken()) await post('/auth/logout').catch(() => {});
  setToken(null);
  forgetAll();
  ctx.user = null;
  ctx.family = null;
  navigate('login');
}

onUnauthorized(() => {
  if (!ctx.user && !getToken()) return;
  setToken(null);
  forgetAll();
  ctx.user = null;
  ctx.family = null;
  stopFamilyLive();
  toast('로그인이 만료되었어요. 다시 로그인해 주세요.', 'error');
  navigate('login');
});

async function boot() {
  initConnectivity();
  registerServiceWorker();
  document.getElementById('logout-button').addEventListener('click', () => logout());
  initPushButton(document.getElementById('push-button'));
  window.addEventListener('hashchange', route);
  // Tapping the tab that is already open shows it afresh (missions and calendar have no live
  // channel: this is how to see what the other member just did).
  document.getElementById('tabbar').addEventListener('click', (event) => {
    const link = event.target.closest('a[data-tab]');
    if (link && location.hash === link.getAttribute('href')) {
      event.preventDefault();
      route();
    }
  });
  // Back online after an offline start: who we are may have changed (paired meanwhile).
  onConnectivity((online) => {
    if (!online || !ctx.stale || !getToken()) return;
    const before = ctx.family ? ctx.family.id : null;
    refreshMe()
      .then(() => {
        if ((ctx.family ? ctx.family.id : null) !== before) route();
      })
      .catch(() => {});
  });
  if (getToken()) {
    for (;;) {
      try {
        await refreshMe();
        break;
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) break;
        if (error instanceof ApiError && error.unanswered && startFromLastKnown()) break;
        // Offline at the very first start: keep the token and try again shortly.
        if (isOnline()) showError(error);
        await new Promise((resolve) => setTimeout(resolve, 3000));
      }
    }
  }
  route();
}

boot();
