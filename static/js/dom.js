// A tiny DOM toolkit: element builder, toast, dates.
import { keepOfflineState } from './connectivity.js';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'style') {
      // Through the CSSOM: the Content-Security-Policy refuses inline style attributes.
      el.style.cssText = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== 'string') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const svgNS = 'http://www.w3.org/2000/svg';

export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) if (child) el.append(child);
  return el;
}

let toastTimer;
/**
 * A short note at the bottom of the screen, above the tab bar (never over the gift's name or
 * the screen's title), that does not catch taps. The element stays in the page as a polite live
 * region; it is emptied rather than hidden, so every new text is announced.
 */
export function toast(message, kind = 'info') {
  const el = document.getElementById('toast');
  el.hidden = false;
  el.textContent = message;
  el.dataset.kind = kind;
  el.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.classList.remove('show');
    el.textContent = '';
  }, 2600);
}

export function showError(error) {
  toast(error && error.message ? error.message : String(error), 'error');
}

/** Disables a button while `work` runs, so a double tap does not send twice. */
export async function busy(button, work) {
  if (button.disabled) return undefined;
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
    keepOfflineState(button);
  }
}

const pad = (n) => String(n).padStart(2, '0');

export function ymd(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/**
 * The family calendar's time zone. The server buckets calendar days (`GET /api/calendar`) in
 * `PODO_TIMEZONE` and names it in every calendar answer (`time_zone`); until the first answer we
 * assume the default, `Asia/Seoul`. "Today" on the calendar must be the day the server files
 * today's approvals under, whatever zone this device is set to.
 */
let familyTimeZone = 'Asia/Seoul';

export function setFamilyTimeZone(zone) {
  if (zone) familyTimeZone = zone;
}

/** Today as `YYYY-MM-DD` in the family's time zone (the device's own if the zone is unknown). */
export function familyToday() {
  try {
    const parts = new Intl.DateTimeFormat('en-CA', { timeZone: familyTimeZone, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(new Date());
    const part = (type) => parts.find((p) => p.type === type).value;
    return `${part('year')}-${part('month')}-${part('day')}`;
  } catch {
    return ymd(new Date());
  }
}

export function formatTime(iso) {
  const d = new Date(iso);
  const hours = d.getHours();
  return `${hours < 12 ? '오전' : '오후'} ${hours % 12 || 12}:${pad(d.getMinutes())}`;
}

export function formatDate(iso) {
  const d = new Date(iso);
  return `${d.getMonth() + 1}월 ${d.getDate()}일`;
}

export function formatDay(dateText) {
  const [y, m, d] = dateText.split('-').map(Number);
  const weekday = '일월화수목금토'[new Date(y, m - 1, d).getDay()];
  return `${m}월 ${d}일 (${weekday})`;
}

export function emptyState(icon, title, text) {
  return h('div', { class: 'empty' }, h('div', { class: 'empty-icon' }, icon), h('p', { class: 'empty-title' }, title), text && h('p', { class: 'empty-text' }, text));
}
