// The chat screen: history with infinite scroll back, stickers, own/partner bubbles, presence.
import { ChatClient, MAX_TEXT } from './chat-client.js';
import { emptyState, formatDay, formatTime, h, toast } from './dom.js';

export const STICKERS = ['grape-happy.svg', 'grape-love.svg', 'grape-cheer.svg', 'grape-thanks.svg', 'grape-sad.svg', 'grape-sleepy.svg'];
const STICKER_TEXT = /^\/static\/media\/([A-Za-z0-9_.-]+)$/;
const ERRORS = { text_too_long: '메시지가 너무 길어요.', invalid_frame: '메시지를 보내지 못했어요.' };

let client = null;

function clientFor(userId) {
  if (!client || client.userId !== userId) {
    if (client) client.stop();
    client = new ChatClient(userId);
  }
  return client;
}

export function render(view, ctx) {
  const chat = clientFor(ctx.user.id);
  const partner = ctx.partner;

  const dot = h('span', { class: 'presence', id: 'partner-presence', title: '' });
  const connection = h('span', { class: 'connection', id: 'chat-connection' });
  const list = h('div', { class: 'messages', id: 'messages' });
  const input = h('textarea', { id: 'chat-input', rows: 1, maxlength: MAX_TEXT, placeholder: '메시지를 입력하세요', 'aria-label': '메시지' });
  const send = h('button', { class: 'send-button', type: 'submit', id: 'chat-send', 'aria-label': '보내기' }, '➤');
  const stickerToggle = h('button', { class: 'sticker-toggle', type: 'button', id: 'sticker-toggle', 'aria-label': '이모티콘' }, '😊');
  const tray = h(
    'div',
    { class: 'sticker-tray', id: 'sticker-tray', hidden: true },
    STICKERS.map((file) => {
      const button = h('button', { type: 'button', class: 'sticker-choice', dataset: { sticker: file } }, h('img', { src: `/media/${file}`, alt: '' }));
      button.addEventListener('click', () => {
        chat.send(`/static/media/${file}`);
        tray.hidden = true;
      });
      return button;
    }),
  );
  const composer = h('form', { class: 'composer', id: 'composer' }, stickerToggle, input, send);
  view.append(
    h(
      'section',
      { class: 'screen chat-screen' },
      h('div', { class: 'chat-head' }, h('div', { class: 'avatar' }, ctx.user.role === 'parent' ? '🧒' : '🧑'), h('div', { class: 'chat-partner' }, h('div', { class: 'chat-name' }, partner ? partner.name : '', dot), connection)),
      list,
      tray,
      composer,
    ),
  );

  stickerToggle.addEventListener('click', () => {
    tray.hidden = !tray.hidden;
  });
  const submit = () => {
    const text = input.value.trim();
    if (!text) return;
    if ([...text].length > MAX_TEXT) {
      toast(ERRORS.text_too_long, 'error');
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
    dot.title = here ? '채팅방에 있어요' : '자리에 없어요';
    const labels = { online: here ? '지금 보고 있어요' : '', connecting: '연결 중…', offline: '오프라인 · 다시 연결하면 보낼게요', idle: '' };
    connection.textContent = chat.available ? labels[chat.status] ?? '' : '채팅 기능을 준비하고 있어요';
    connection.dataset.status = chat.status;
  };

  const drawMessages = (mode) => {
    const stick = mode === 'reset' || nearBottom();
    const heightBefore = list.scrollHeight;
    const topBefore = list.scrollTop;
    const items = [];
    if (chat.hasOlder) items.push(h('div', { class: 'older-hint' }, '위로 올려 이전 메시지 보기'));
    let lastDay = null;
    for (const message of chat.sorted()) {
      const day = message.created_at.slice(0, 10);
      const localDay = new Date(message.created_at).toDateString();
      if (localDay !== lastDay) {
        items.push(h('div', { class: 'day-separator' }, formatDay(ymdLocal(message.created_at) || day)));
        lastDay = localDay;
      }
      items.push(bubble(message, message.sender_id === ctx.user.id));
    }
    for (const entry of chat.outbox) items.push(bubble({ ...entry, sender_id: ctx.user.id }, true, true));
    if (!items.length) items.push(emptyState('💬', '아직 대화가 없어요', '첫 메시지를 보내 보세요!'));
    list.replaceChildren(...items);
    if (mode === 'older') list.scrollTop = topBefore + (list.scrollHeight - heightBefore);
    else if (stick || mode === 'pending') list.scrollTop = list.scrollHeight;
  };

  const unsubscribe = chat.subscribe((change) => {
    if (change.kind === 'error') {
      toast(ERRORS[change.frame.code] || change.frame.message || '메시지를 보내지 못했어요.', 'error');
      return;
    }
    drawHeader();
    if (change.kind !== 'status' && change.kind !== 'presence') drawMessages(change.kind);
  });
  drawHeader();
  drawMessages('reset');
  chat.start();

  return () => {
    unsubscribe();
    chat.stop();
  };
}

function ymdLocal(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return null;
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
}

function bubble(message, mine, pending = false) {
  const sticker = STICKER_TEXT.exec(message.text);
  const body = sticker ? h('img', { class: 'sticker', src: `/media/${sticker[1]}`, alt: '이모티콘' }) : h('div', { class: 'text' }, message.text);
  return h(
    'div',
    { class: `bubble-row ${mine ? 'mine' : 'theirs'}${pending ? ' pending' : ''}`, dataset: pending ? { clientId: message.client_id } : { seq: message.seq } },
    !mine && h('div', { class: 'sender' }, message.sender_name),
    h('div', { class: `bubble${sticker ? ' has-sticker' : ''}` }, body),
    h('div', { class: 'meta' }, pending ? '보내는 중…' : formatTime(message.created_at)),
  );
}
