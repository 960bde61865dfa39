// The chat screen: history with infinite scroll back, stickers, own/partner bubbles, presence.
// The list is kept in step with the client's messages node by node (a new message adds one
// bubble; a sent one turns from pending to sent in place), never rebuilt wholesale. A screen
// reader hears the partner's new messages through one polite status line, not the whole list.
import { errorText } from './api.js';
import { ChatClient, MAX_TEXT } from './chat-client.js';
import { isOnline, onConnectivity } from './connectivity.js';
import { emptyState, formatDay, formatTime, h, toast } from './dom.js';

export const STICKERS = ['grape-happy.svg', 'grape-love.svg', 'grape-cheer.svg', 'grape-thanks.svg', 'grape-sad.svg', 'grape-sleepy.svg'];
const STICKER_NAMES = {
  'grape-happy.svg': '기뻐요',
  'grape-love.svg': '사랑해요',
  'grape-cheer.svg': '힘내요',
  'grape-thanks.svg': '고마워요',
  'grape-sad.svg': '슬퍼요',
  'grape-sleepy.svg': '졸려요',
};
const STICKER_TEXT = /^\/static\/media\/([A-Za-z0-9_.-]+)$/;
/** Sent again by the client itself: no need to bother the user. */
const QUIET_ERRORS = new Set(['not_stored', 'too_many_pending']);

let client = null;

function clientFor(userId) {
  if (!client || client.userId !== userId) {
    if (client) client.stop();
    client = new ChatClient(userId);
  }
  return client;
}

function stickerName(file) {
  return STICKER_NAMES[file] ? `${STICKER_NAMES[file]} 이모티콘` : '이모티콘';
}

export function render(view, ctx) {
  const chat = clientFor(ctx.user.id);
  const partner = ctx.partner;

  const dot = h('span', { class: 'presence', id: 'partner-presence', role: 'img' });
  const connection = h('span', { class: 'connection', id: 'chat-connection' });
  const list = h('div', { class: 'messages', id: 'messages', role: 'region', 'aria-label': '대화 내용', tabindex: '0' });
  const news = h('p', { class: 'sr-only', id: 'chat-news', 'aria-live': 'polite', 'aria-atomic': 'true' });
  const input = h('textarea', { id: 'chat-input', rows: 1, maxlength: MAX_TEXT, placeholder: '메시지를 입력하세요', 'aria-label': '메시지' });
  const send = h('button', { class: 'send-button', type: 'submit', id: 'chat-send', 'aria-label': '보내기' }, '➤');
  const stickerToggle = h('button', { class: 'sticker-toggle', type: 'button', id: 'sticker-toggle', 'aria-label': '이모티콘', 'aria-expanded': 'false', 'aria-controls': 'sticker-tray' }, '😊');
  const tray = h(
    'div',
    { class: 'sticker-tray', id: 'sticker-tray', role: 'group', 'aria-label': '이모티콘 고르기', hidden: true },
    STICKERS.map((file) => {
      const button = h('button', { type: 'button', class: 'sticker-choice', dataset: { sticker: file }, 'aria-label': `${stickerName(file)} 보내기` }, h('img', { src: `/media/${file}`, alt: '' }));
      button.addEventListener('click', () => {
        chat.send(`/static/media/${file}`);
        showTray(false);
        stickerToggle.focus();
      });
      return button;
    }),
  );
  const composer = h('form', { class: 'composer', id: 'composer' }, stickerToggle, input, send);
  view.append(
    h(
      'section',
      { class: 'screen chat-screen', 'aria-labelledby': 'chat-title' },
      h(
        'div',
        { class: 'chat-head' },
        h('div', { class: 'avatar', 'aria-hidden': 'true' }, ctx.user.role === 'parent' ? '🧒' : '🧑'),
        h('div', { class: 'chat-partner' }, h('h1', { class: 'chat-name', id: 'chat-title' }, h('span', {}, partner ? partner.name : '채팅'), partner && h('span', { class: 'sr-only' }, ' · 채팅'), dot), connection),
      ),
      news,
      list,
      tray,
      composer,
    ),
  );

  const showTray = (open) => {
    tray.hidden = !open;
    stickerToggle.setAttribute('aria-expanded', String(open));
  };
  stickerToggle.addEventListener('click', () => showTray(tray.hidden));
  const submit = () => {
    const text = input.value.trim();
    if (!text) return;
    if ([...text].length > MAX_TEXT) {
      toast(errorText('text_too_long'), 'error');
      return;
    }
    chat.send(text);
    input.value = '';
    input.focus();
  };
  composer.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  list.addEventListener('scroll', () => {
    if (list.scrollTop < 80) chat.loadOlder();
  });

  const nearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 120;

  const drawHeader = () => {
    const here = partner && chat.present.has(partner.id);
    dot.className = `presence ${here ? 'online' : 'offline'}`;
    const where = here ? '채팅방에 있어요' : '자리에 없어요';
    dot.title = where;
    dot.setAttribute('aria-label', partner ? `${partner.name}: ${where}` : where);
    const offline = chat.status === 'offline' || !isOnline();
    const labels = { online: here ? '지금 보고 있어요' : '', connecting: '연결 중…', offline: '오프라인 · 다시 연결하면 보낼게요', idle: '' };
    connection.textContent = chat.available ? (offline ? labels.offline : labels[chat.status] ?? '') : '채팅 기능을 준비하고 있어요';
    connection.dataset.status = offline ? 'offline' : chat.status;
  };

  // key → node: `c:<client_id>` for own messages (pending or sent: the same bubble), `s:<seq>`
  // for the partner's, `d:<day>` for day separators.
  const nodes = new Map();
  const pendingLabel = () => (isOnline() && chat.status !== 'offline' ? '보내는 중…' : '연결되면 보낼게요');

  const drawMessages = (mode) => {
    const stick = mode === 'reset' || nearBottom();
    const heightBefore = list.scrollHeight;
    const topBefore = list.scrollTop;
    const wanted = []; // [key, make, update?]
    if (chat.hasOlder) wanted.push(['older', () => h('div', { class: 'older-hint' }, '위로 올려 이전 메시지 보기')]);
    let lastDay = null;
    const shown = new Set();
    const day = (iso) => {
      const localDay = new Date(iso).toDateString();
      if (localDay !== lastDay) {
        wanted.push([`d:${localDay}`, () => h('div', { class: 'day-separator' }, formatDay(ymdLocal(iso) || iso.slice(0, 10)))]);
        lastDay = localDay;
      }
    };
    for (const message of chat.sorted()) {
      const mine = message.sender_id === ctx.user.id;
      const key = mine && message.client_id ? `c:${message.client_id}` : `s:${message.seq}`;
      if (mine) shown.add(message.client_id);
      day(message.created_at);
      wanted.push([key, () => bubble(message, mine, false), (node) => settle(node, message)]);
    }
    for (const entry of chat.outbox) {
      if (shown.has(entry.client_id)) continue;
      wanted.push([`c:${entry.client_id}`, () => bubble({ ...entry, sender_id: ctx.user.id }, true, pendingLabel()), (node) => waiting(node, pendingLabel())]);
    }
    if (!wanted.length) wanted.push(['empty', () => emptyState('💬', '아직 대화가 없어요', '첫 메시지를 보내 보세요!')]);

    const keep = new Set(wanted.map(([key]) => key));
    for (const [key, node] of nodes) {
      if (!keep.has(key)) {
        node.remove();
        nodes.delete(key);
      }
    }
    let cursor = list.firstChild;
    for (const [key, make, update] of wanted) {
      let node = nodes.get(key);
      if (!node) {
        node = make();
        nodes.set(key, node);
      } else if (update) {
        update(node);
      }
      if (node === cursor) cursor = cursor.nextSibling;
      else list.insertBefore(node, cursor);
    }
    if (mode === 'older') list.scrollTop = topBefore + (list.scrollHeight - heightBefore);
    else if (stick || mode === 'pending') list.scrollTop = list.scrollHeight;
  };

  const unsubscribe = chat.subscribe((change) => {
    if (change.kind === 'error') {
      if (!QUIET_ERRORS.has(change.frame.code)) toast(errorText(change.frame.code), 'error');
      return;
    }
    if (change.kind === 'message' && change.message.sender_id !== ctx.user.id) {
      const sticker = STICKER_TEXT.exec(change.message.text);
      news.textContent = `${change.message.sender_name}: ${sticker ? stickerName(sticker[1]) : change.message.text}`;
    }
    drawHeader();
    if (change.kind === 'status') drawMessages('status');
    else if (change.kind !== 'presence') drawMessages(change.kind);
  });
  const unwatch = onConnectivity(() => {
    drawHeader();
    drawMessages('status');
  });
  drawHeader();
  drawMessages('reset');
  chat.start();

  return () => {
    unsubscribe();
    unwatch();
    chat.stop();
  };
}

function ymdLocal(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return null;
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

/** `pending` is false for a stored message, else the label shown under it. */
function bubble(message, mine, pending) {
  const sticker = STICKER_TEXT.exec(message.text);
  const body = sticker ? h('img', { class: 'sticker', src: `/media/${sticker[1]}`, alt: stickerName(sticker[1]) }) : h('div', { class: 'text' }, message.text);
  const row = h(
    'div',
    { class: `bubble-row ${mine ? 'mine' : 'theirs'}`, dataset: message.client_id ? { clientId: message.client_id } : {} },
    !mine && h('div', { class: 'sender' }, message.sender_name),
    h('div', { class: `bubble${sticker ? ' has-sticker' : ''}` }, body),
    h('div', { class: 'meta' }),
  );
  if (pending) waiting(row, pending);
  else settle(row, message);
  return row;
}

function waiting(row, label) {
  row.classList.add('pending');
  const meta = row.querySelector('.meta');
  if (meta.textContent !== label) meta.textContent = label;
}

function settle(row, message) {
  if (row.dataset.seq === String(message.seq)) return;
  row.classList.remove('pending');
  row.dataset.seq = message.seq;
  row.querySelector('.meta').textContent = formatTime(message.created_at);
}
