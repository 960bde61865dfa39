// The grape board: the parent picks a gift and grants grapes, the child attaches them.
import { del, get, post, randomId } from './api.js';
import { busy, emptyState, formatDate, h, showError, toast } from './dom.js';
import { grapeBunch } from './grapes.js';
import { wishImage } from './wishes.js';

export function render(view, ctx) {
  const root = h('section', { class: 'screen board-screen' });
  view.append(root);
  let previous = null;
  let wishes = null;
  let closed = false;

  const draw = (board) => {
    if (closed) return;
    if (previous && board && previous.id === board.id && previous.status === 'active' && board.status === 'complete') {
      celebrate(board);
    }
    previous = board;
    root.replaceChildren(...content(board));
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

  const attach = async (event) => {
    const button = event && event.currentTarget instanceof HTMLButtonElement ? event.currentTarget : document.getElementById('attach-button');
    await busy(button || h('button'), async () => {
      try {
        const board = await post('/board/attach', { key: randomId('attach-') });
        ctx.board.applyBoard(board);
      } catch (error) {
        showError(error);
      }
    });
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
    if (wishes) fill(wishes);
    get('/wishes')
      .then((res) => {
        wishes = res.wishes;
        fill(wishes);
      })
      .catch(showError);
    return box;
  };

  const pickRow = (wish) => {
    const size = h('input', { type: 'number', min: 1, max: 100, value: 31, class: 'size-input', 'aria-label': '포도알 개수' });
    const button = h('button', { class: 'button primary', type: 'button', dataset: { wishId: wish.id } }, '포도판 만들기');
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
  if (!ctx.board.loaded) root.append(h('div', { class: 'loading' }, '불러오는 중…'));
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
      h('span', { class: 'count', id: 'board-count' }, h('strong', {}, board.attached), ` / ${board.size}`),
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
        const next = await post('/board/grant', { count, key: randomId('grant-') });
        ctx.board.applyBoard(next);
        toast(`포도알 ${count}개를 주었어요!`);
      } catch (error) {
        showError(error);
      }
    });
  const quick = [1, 3, 5].filter((n) => n <= room).map((n) => {
    const b = h('button', { class: 'button soft', type: 'button', dataset: { grant: n } }, `+${n}`);
    b.addEventListener('click', () => grant(n, b));
    return b;
  });
  const customButton = h('button', { class: 'button primary', type: 'button', id: 'grant-button' }, '포도알 주기');
  customButton.addEventListener('click', () => grant(Number(custom.value) || 1, customButton));
  const cancel = h('button', { class: 'text-button danger', type: 'button', id: 'cancel-board' }, '포도판 취소');
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
    h('h3', {}, '포도알 주기'),
    room === 0 ? h('p', { class: 'muted' }, '모든 포도알을 주었어요. 자녀가 붙이기를 기다리는 중이에요.') : [h('div', { class: 'quick-grants' }, quick), h('div', { class: 'custom-grant' }, custom, h('span', {}, '개'), customButton)],
    h('div', { class: 'panel-footer' }, cancel),
  );
}

function attachPanel(board, attach) {
  if (!board.unattached) {
    return h('p', { class: 'hint center', id: 'attach-hint' }, '미션을 하고 포도알을 받아 보세요! 🍇');
  }
  const button = h('button', { class: 'button primary big pulse', type: 'button', id: 'attach-button' }, `포도알 붙이기 (${board.unattached})`);
  button.addEventListener('click', attach);
  return h('div', { class: 'attach-panel' }, h('p', { class: 'hint center' }, '반짝이는 포도알을 눌러 붙여 보세요!'), button);
}

function celebrate(board) {
  document.querySelector('.celebration')?.remove();
  const drops = Array.from({ length: 24 }, (_, i) =>
    h('span', { class: 'confetti', style: `left:${(i * 41) % 100}%;animation-delay:${(i % 8) * 0.15}s;animation-duration:${2.2 + (i % 5) * 0.3}s` }, i % 3 ? '🍇' : '🎉'),
  );
  const close = h('button', { class: 'button primary big', type: 'button' }, '확인');
  const overlay = h(
    'div',
    { class: 'celebration', id: 'celebration', role: 'dialog', 'aria-label': '포도송이 완성' },
    drops,
    h('div', { class: 'celebration-card' }, h('div', { class: 'big-emoji' }, '🎉'), h('h2', {}, '포도송이 완성!'), h('p', {}, `${board.size}알을 모두 모았어요.`), h('p', { class: 'gift-name' }, `🎁 ${board.wish.name}`), close),
  );
  close.addEventListener('click', () => overlay.remove());
  document.body.append(overlay);
}
