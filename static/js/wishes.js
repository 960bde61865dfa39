// The wishlist: the child adds, edits and deletes wishes; the parent sees them and picks a gift.
import { ApiError, del, get, patch, post } from './api.js';
import { busy, emptyState, formatDate, h, showError, toast } from './dom.js';
import { recall, remember } from './last-known.js';

const STATUS = { wished: '위시', picked: '포도판 진행 중', given: '받았어요' };

/** The wish's picture, or a gift emoji when it has none or it cannot be loaded. */
export function wishImage(wish, cls) {
  const fallback = h('div', { class: `${cls} placeholder` }, '🎁');
  if (!wish.image_url) return fallback;
  const img = h('img', { class: cls, src: wish.image_url, alt: '', loading: 'lazy', referrerpolicy: 'no-referrer' });
  img.addEventListener('error', () => img.replaceWith(fallback));
  return img;
}

export function render(view, ctx) {
  const isChild = ctx.user.role === 'child';
  const list = h('div', { class: 'wish-list', id: 'wish-list' }, h('div', { class: 'loading' }, '불러오는 중…'));
  const root = h('section', { class: 'screen wishes-screen' }, h('h1', { class: 'screen-title' }, '위시리스트'));
  if (isChild) root.append(addForm(() => load()));
  else root.append(h('p', { class: 'muted' }, `${ctx.partner ? ctx.partner.name : '자녀'}의 위시리스트예요. 선물을 골라 포도판을 만들어 보세요.`));
  root.append(list);
  view.append(root);

  let closed = false;
  const show = (wishes) => {
    if (!wishes.length) {
      list.replaceChildren(isChild ? emptyState('🎁', '아직 위시가 없어요', '갖고 싶은 선물을 위에 적어 보세요.') : emptyState('🎁', '아직 위시가 없어요', '자녀가 위시를 담으면 여기에 보여요.'));
      return;
    }
    list.replaceChildren(...wishes.map((wish) => wishCard(wish, ctx, load)));
  };
  const load = async () => {
    try {
      const { wishes } = await get('/wishes');
      if (closed) return;
      remember(ctx.user.id, 'wishes', wishes);
      show(wishes);
    } catch (error) {
      if (closed) return;
      // Offline: the last known list (already shown) stays.
      if (error instanceof ApiError && error.unanswered && recall(ctx.user.id, 'wishes')) return;
      showError(error);
    }
  };
  const last = recall(ctx.user.id, 'wishes');
  if (last) show(last);
  load();
  return () => {
    closed = true;
  };
}

function wishFields(wish = {}) {
  return [
    h('input', { name: 'name', required: true, maxlength: 100, placeholder: '갖고 싶은 선물', value: wish.name || '', 'aria-label': '이름' }),
    h('input', { name: 'link', type: 'url', maxlength: 2048, placeholder: '링크 (선택)', value: wish.link || '', 'aria-label': '링크' }),
    h('input', { name: 'image_url', type: 'url', maxlength: 2048, placeholder: '이미지 주소 (선택)', value: wish.image_url || '', 'aria-label': '이미지 주소' }),
  ];
}

function readForm(form, { nullEmpty }) {
  const data = Object.fromEntries(new FormData(form));
  const body = { name: data.name.trim() };
  for (const key of ['link', 'image_url']) {
    const value = data[key].trim();
    if (value) body[key] = value;
    else if (nullEmpty) body[key] = null;
  }
  return body;
}

function addForm(reload) {
  const form = h('form', { class: 'card wish-form', id: 'wish-form' }, h('h2', {}, '새 위시 담기'), ...wishFields(), h('button', { class: 'button primary big', type: 'submit', 'data-needs-server': true }, '위시 담기'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form.querySelector('button'), async () => {
      try {
        await post('/wishes', readForm(form, { nullEmpty: false }));
        form.reset();
        toast('위시를 담았어요!');
        await reload();
      } catch (error) {
        showError(error);
      }
    });
  });
  return form;
}

function wishCard(wish, ctx, reload) {
  const card = h('article', { class: `card wish wish-${wish.status}`, dataset: { wishId: wish.id } });
  const show = () => {
    const actions = h('div', { class: 'wish-actions' });
    if (ctx.user.role === 'child' && wish.status === 'wished') {
      const edit = h('button', { class: 'button soft small', type: 'button', 'aria-label': `${wish.name} 수정`, 'data-needs-server': true }, '수정');
      edit.addEventListener('click', () => editing());
      const remove = h('button', { class: 'button ghost small danger', type: 'button', 'aria-label': `${wish.name} 삭제`, 'data-needs-server': true }, '삭제');
      remove.addEventListener('click', () => {
        if (!confirm(`'${wish.name}'을(를) 삭제할까요?`)) return;
        busy(remove, async () => {
          try {
            await del(`/wishes/${wish.id}`);
            await reload();
          } catch (error) {
            showError(error);
          }
        });
      });
      actions.append(edit, remove);
    }
    const board = ctx.board && ctx.board.board;
    if (ctx.user.role === 'parent' && wish.status === 'wished' && !(board && board.status === 'active')) {
      const pick = h('button', { class: 'button primary small pick-button', type: 'button', 'aria-label': `${wish.name}을(를) 선물로 고르기`, 'data-needs-server': true }, '선물로 고르기');
      pick.addEventListener('click', () =>
        busy(pick, async () => {
          try {
            const created = await post('/board', { wish_id: wish.id });
            ctx.board.applyBoard(created);
            toast('포도판을 만들었어요!');
            ctx.navigate('board');
          } catch (error) {
            showError(error);
          }
        }),
      );
      actions.append(pick);
    }
    card.replaceChildren(
      wishImage(wish, 'wish-image'),
      h(
        'div',
        { class: 'wish-body' },
        h('div', { class: 'wish-name' }, wish.name),
        wish.link && h('a', { class: 'wish-link', href: wish.link, target: '_blank', rel: 'noopener noreferrer' }, linkLabel(wish.link)),
        h('div', { class: 'wish-meta' }, h('span', { class: `status status-${wish.status}` }, STATUS[wish.status] || wish.status), h('span', { class: 'muted' }, formatDate(wish.created_at))),
        actions,
      ),
    );
  };
  const editing = () => {
    const form = h('form', { class: 'wish-edit' }, ...wishFields(wish));
    const cancel = h('button', { class: 'button ghost small', type: 'button' }, '취소');
    cancel.addEventListener('click', show);
    form.append(h('div', { class: 'wish-actions' }, h('button', { class: 'button primary small', type: 'submit', 'data-needs-server': true }, '저장'), cancel));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      busy(form.querySelector('button[type=submit]'), async () => {
        try {
          Object.assign(wish, await patch(`/wishes/${wish.id}`, readForm(form, { nullEmpty: true })));
          show();
        } catch (error) {
          showError(error);
          if (error.code === 'wish_locked') reload();
        }
      });
    });
    card.replaceChildren(form);
  };
  show();
  return card;
}

function linkLabel(link) {
  try {
    return `🔗 ${new URL(link).hostname}`;
  } catch {
    return '🔗 링크';
  }
}
