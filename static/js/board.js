// The grape board: the parent picks a gift and grants grapes, the child attaches them.
import { ApiError, del, get, getToken, post, randomId } from './api.js';
import { keepOfflineState } from './connectivity.js';
import { busy, emptyState, formatDate, h, showError, toast } from './dom.js';
import { grapeBunch } from './grapes.js';
import { recall, remember } from './last-known.js';
import { wishImage } from './wishes.js';

/**
 * Grant and attach are retry-safe (API.md `key`): a request keeps its key until it got an
 * answer, any answer. One that got none (no connection, or no answer within the timeout) may
 * have been applied, so pressing again sends the same key and the server answers the first
 * request's board instead of applying it twice. Kept in sessionStorage, so a reload in the
 * middle keeps it too.
 */
const PENDING_KEYS = 'podo.pending-keys';

function pendingKeys() {
  try {
    return JSON.parse(sessionStorage.getItem(PENDING_KEYS) || '{}') || {};
  } catch {
    return {};
  }
}

function savePendingKeys(keys) {
  try {
    sessionStorage.setItem(PENDING_KEYS, JSON.stringify(keys));
  } catch {
    /* memory only, then */
  }
}

/** `action` names what is asked (`attach`, `grant:3`): a different request gets its own key. */
async function retrySafe(action, path, body = {}) {
  const scope = `${getToken() ? getToken().slice(-12) : ''}:${action}`;
  const keys = pendingKeys();
  const key = keys[scope] || randomId(`${action.replace(/\W/g, '-')}-`);
  keys[scope] = key;
  savePendingKeys(keys);
  const forget = () => {
    const now = pendingKeys();
    delete now[scope];
    savePendingKeys(now);
  };
  try {
    const board = await post(path, { ...body, key });
    forget();
    return board;
  } catch (error) {
    if (!(error instanceof ApiError && error.unanswered)) forget();
    throw error;
  }
}

function showActionError(error) {
  if (error instanceof ApiError && error.unanswered) {
    toast('응답을 받지 못했어요. 다시 누르면 같은 요청으로 보내니 두 번 적용되지 않아요.', 'error');
  } else {
    showError(error);
  }
}

let attaching = false;

export function render(view, ctx) {
  // The title and the announcer stay while the board below them is redrawn: a screen reader
  // hears the new count once, politely, and nothing else on the screen is a live region.
  const title = h('h1', { class: 'screen-title', id: 'board-title', tabindex: '-1' }, '포도판');
  const news = h('p', { class: 'sr-only', id: 'board-news', 'aria-live': 'polite', 'aria-atomic': 'true' });
  const body = h('div', { class: 'board-body' });
  const root = h('section', { class: 'screen board-screen', 'aria-labelledby': 'board-title' }, title, news, body);
  view.append(root);
  let previous = null;
  let wishes = null;
  let closed = false;

  const draw = (board) => {
    if (closed) return;
    if (previous && board && previous.id === board.id && previous.status === 'active' && board.status === 'complete') {
      celebrate(board, () => document.getElementById('board-title'));
    }
    if (previous && board && (previous.id !== board.id || previous.attached !== board.attached || previous.granted !== board.granted)) {
      news.textContent = board.status === 'complete' ? `포도송이 완성! ${board.size}알을 모두 모았어요.` : `포도알 ${board.size}개 중 ${board.attached}개를 붙였어요. 붙일 포도알 ${board.unattached}개.`;
    }
    previous = board;
    body.replaceChildren(...content(board));
  };

  const content = (board) => {
    const active = board && board.status === 'active';
    const parts = [];
    if (board) parts.push(boardCard(board, ctx, attach));
    if (active && ctx.user.role === 'parent') parts.push(grantPanel(board, ctx));
    if (active && ctx.user.role === 'child') parts.push(attachPanel(board, attach));
    if (!active && ctx.user.role === 'parent') parts.push(pickGift());
    if (!board && ctx.user.role === 'child') {
      parts.push(emptyState('🍇', '아직 포도판이 없어요', '위시리스트에 갖고 싶은 선물을 담아 두면 부모님이 골라서 포도판을 만들어 줘요.'), h('a', { class: 'button primary big', href: '#/wishes' }, '위시리스트 가기'));
    }
    if (board && !active && ctx.user.role === 'child') {
      parts.push(h('p', { class: 'muted center' }, '새 포도판을 기다리는 중이에요. 위시리스트에 선물을 더 담아 보세요!'));
    }
    return parts;
  };

  // One attach at a time, whichever grape or button was pressed.
  const attach = async (event) => {
    const button = event && event.currentTarget instanceof HTMLButtonElement ? event.currentTarget : null;
    if (attaching) return;
    attaching = true;
    if (button) button.disabled = true;
    try {
      const board = await retrySafe('attach', '/board/attach');
      ctx.board.applyBoard(board);
      // The grape pressed is gone with the redraw: keep the keyboard where it was.
      if (button && !button.isConnected) (document.querySelector('#board .grape-button') || document.getElementById('attach-button') || title).focus();
    } catch (error) {
      showActionError(error);
    } finally {
      attaching = false;
      if (button && button.isConnected) {
        button.disabled = false;
        keepOfflineState(button);
      }
    }
  };

  const pickGift = () => {
    const box = h('div', { class: 'card', id: 'pick-gift' }, h('h2', {}, '🎁 선물 고르기'), h('p', { class: 'muted' }, '자녀의 위시리스트에서 선물을 골라 새 포도판을 만들어요.'));
    const list = h('div', { class: 'pick-list' }, h('p', { class: 'muted' }, '불러오는 중…'));
    box.append(list);
    const fill = (items) => {
      const open = items.filter((w) => w.status === 'wished');
      if (!open.length) {
        list.replaceChildren(h('p', { class: 'muted' }, '아직 고를 수 있는 위시가 없어요. 자녀가 위시리스트에 선물을 담으면 여기에 나타나요.'));
        return;
      }
      list.replaceChildren(...open.map((wish) => pickRow(wish)));
    };
    const last = wishes || recall(ctx.user.id, 'wishes');
    if (last) fill(last);
    get('/wishes')
      .then((res) => {
        wishes = res.wishes;
        remember(ctx.user.id, 'wishes', wishes);
        fill(wishes);
      })
      .catch((error) => {
        if (!(error instanceof ApiError && error.unanswered)) showError(error);
      });
    return box;
  };

  const pickRow = (wish) => {
    const size = h('input', { type: 'number', min: 1, max: 100, value: 31, class: 'size-input', 'aria-label': '포도알 개수' });
    const button = h('button', { class: 'button primary', type: 'button', dataset: { wishId: wish.id }, 'data-needs-server': true, 'aria-label': `${wish.name}(으)로 포도판 만들기` }, '포도판 만들기');
    button.addEventListener('click', () =>
      busy(button, async () => {
        try {
          const board = await post('/board', { wish_id: wish.id, size: Number(size.value) || 31 });
          wishes = null;
          ctx.board.applyBoard(board);
          toast('새 포도판을 만들었어요!');
        } catch (error) {
          showError(error);
        }
      }),
    );
    return h('div', { class: 'pick-row' }, wishImage(wish, 'thumb'), h('div', { class: 'pick-name' }, wish.name), h('label', { class: 'size-label' }, size, '알'), button);
  };

  const unsubscribe = ctx.board.subscribe(draw);
  if (!ctx.board.loaded) body.append(h('div', { class: 'loading' }, '불러오는 중…'));
  return () => {
    closed = true;
    unsubscribe();
  };
}

function boardCard(board, ctx, attach) {
  const complete = board.status === 'complete';
  const percent = Math.round((board.attached / board.size) * 100);
  const canTap = ctx.user.role === 'child' && !complete;
  return h(
    'div',
    { class: `card board-card ${complete ? 'complete' : ''}`, id: 'board', dataset: { attached: board.attached, granted: board.granted, size: board.size, status: board.status } },
    h(
      'div',
      { class: 'gift' },
      wishImage(board.wish, 'gift-image'),
      h('div', {}, h('div', { class: 'gift-label' }, complete ? '받을 선물' : '이번 선물'), h('div', { class: 'gift-name' }, board.wish.name)),
    ),
    grapeBunch(board, { onPendingTap: canTap ? attach : null }),
    h('div', { class: 'progress' }, h('div', { class: 'progress-bar', style: `width:${percent}%` })),
    h(
      'div',
      { class: 'board-stats' },
      h('span', { class: 'count', id: 'board-count' }, h('span', { class: 'sr-only' }, '붙인 포도알 '), h('strong', {}, board.attached), ` / ${board.size}`),
      complete
        ? h('span', { class: 'done' }, `🎉 ${formatDate(board.completed_at)} 완성!`)
        : h('span', { class: 'pending-count', id: 'pending-count' }, board.unattached ? `붙일 포도알 ${board.unattached}개` : `남은 포도알 ${board.size - board.granted}개`),
    ),
  );
}

function grantPanel(board, ctx) {
  const room = board.size - board.granted;
  const custom = h('input', { type: 'number', min: 1, max: Math.max(1, room), value: 1, id: 'grant-count', class: 'size-input', 'aria-label': '줄 포도알 수' });
  const grant = (count, button) =>
    busy(button, async () => {
      try {
        const next = await retrySafe(`grant:${count}`, '/board/grant', { count });
        ctx.board.applyBoard(next);
        toast(`포도알 ${count}개를 주었어요!`);
      } catch (error) {
        showActionError(error);
      }
    });
  const quick = [1, 3, 5].filter((n) => n <= room).map((n) => {
    const b = h('button', { class: 'button soft', type: 'button', dataset: { grant: n }, 'data-needs-server': true }, `+${n}`, h('span', { class: 'sr-only' }, ` 포도알 ${n}개 주기`));
    b.addEventListener('click', () => grant(n, b));
    return b;
  });
  const customButton = h('button', { class: 'button primary', type: 'button', id: 'grant-button', 'data-needs-server': true }, '포도알 주기');
  customButton.addEventListener('click', () => grant(Number(custom.value) || 1, customButton));
  const cancel = h('button', { class: 'text-button danger', type: 'button', id: 'cancel-board', 'data-needs-server': true }, '포도판 취소');
  cancel.addEventListener('click', () => {
    if (!confirm('포도판을 취소할까요? 모은 포도알이 사라지고 선물은 위시리스트로 돌아가요.')) return;
    busy(cancel, async () => {
      try {
        await del('/board');
        const { board: latest } = await get('/board');
        ctx.board.apply(latest, latest ? latest.version : ctx.board.version + 1, true);
      } catch (error) {
        showError(error);
      }
    });
  });
  return h(
    'div',
    { class: 'card grant-panel' },
    h('h2', {}, '포도알 주기'),
    room === 0 ? h('p', { class: 'muted' }, '모든 포도알을 주었어요. 자녀가 붙이기를 기다리는 중이에요.') : [h('div', { class: 'quick-grants' }, quick), h('div', { class: 'custom-grant' }, custom, h('span', {}, '개'), customButton)],
    h('div', { class: 'panel-footer' }, cancel),
  );
}

function attachPanel(board, attach) {
  if (!board.unattached) {
    return h('p', { class: 'hint center', id: 'attach-hint' }, '미션을 하고 포도알을 받아 보세요! 🍇');
  }
  const button = h('button', { class: 'button primary big pulse', type: 'button', id: 'attach-button', 'data-needs-server': true }, `포도알 붙이기 (${board.unattached})`);
  button.addEventListener('click', attach);
  return h('div', { class: 'attach-panel' }, h('p', { class: 'hint center' }, '반짝이는 포도알을 눌러 붙여 보세요!'), button);
}

/**
 * The completion dialog: it takes the focus (and the rest of the app is inert behind it) and
 * gives it back on close, to where it was or else to the screen's title.
 */
function celebrate(board, fallbackFocus) {
  document.querySelector('.celebration')?.remove();
  const opener = document.activeElement;
  const drops = Array.from({ length: 24 }, (_, i) =>
    h('span', { class: 'confetti', 'aria-hidden': 'true', style: `left:${(i * 41) % 100}%;animation-delay:${(i % 8) * 0.15}s;animation-duration:${2.2 + (i % 5) * 0.3}s` }, i % 3 ? '🍇' : '🎉'),
  );
  const close = h('button', { class: 'button primary big', type: 'button' }, '확인');
  const overlay = h(
    'div',
    { class: 'celebration', id: 'celebration', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'celebration-title', 'aria-describedby': 'celebration-text celebration-gift' },
    drops,
    h(
      'div',
      { class: 'celebration-card' },
      h('div', { class: 'big-emoji', 'aria-hidden': 'true' }, '🎉'),
      h('h2', { id: 'celebration-title' }, '포도송이 완성!'),
      h('p', { id: 'celebration-text' }, `${board.size}알을 모두 모았어요.`),
      h('p', { class: 'gift-name', id: 'celebration-gift' }, `🎁 ${board.wish.name}`),
      close,
    ),
  );
  const app = document.getElementById('app');
  const finish = () => {
    overlay.remove();
    app.inert = false;
    const back = opener && opener !== document.body && opener.isConnected ? opener : fallbackFocus();
    if (back) back.focus();
  };
  close.addEventListener('click', finish);
  overlay.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      finish();
    } else if (event.key === 'Tab') {
      // The only control: focus stays on it.
      event.preventDefault();
      close.focus();
    }
  });
  app.inert = true;
  document.body.append(overlay);
  close.focus();
}
