// The last known state, kept in localStorage per user so that the app opens offline with the
// board, wishlist, missions and chat it showed last (the service worker keeps the app itself).
// Logging out forgets all of it.
const PREFIX = 'podo.last.';

function key(scope, name) {
  return `${PREFIX}${scope}.${name}`;
}

export function remember(scope, name, value) {
  try {
    localStorage.setItem(key(scope, name), JSON.stringify(value));
  } catch {
    /* storage full or disabled: only the offline start loses it */
  }
}

/** The remembered value, or `undefined`. */
export function recall(scope, name) {
  try {
    const text = localStorage.getItem(key(scope, name));
    return text === null ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function forgetAll() {
  try {
    for (const name of Object.keys(localStorage)) if (name.startsWith(PREFIX)) localStorage.removeItem(name);
  } catch {
    /* nothing to forget */
  }
}
