// Missions: the parent creates and decides, the child submits; an approval grants the reward.
import { ApiError, del, get, post } from './api.js';
import { busy, emptyState, formatDay, h, showError, toast } from './dom.js';
import { recall, remember } from './last-known.js';

const STATUS = { open: '진행 중', submitted: '확인 대기', approved: '승인됨', rejected: '다시 해 보기' };

export function render(view, ctx) {
  const isParent = ctx.user.role === 'parent';
  const list = h('div', { class: 'mission-list', id: 'mission-list' }, h('div', { class: 'loading' }, '불러오는 중…'));
  const root = h('section', { class: 'screen missions-screen' }, h('h1', { class: 'screen-title' }, '미션'));
  if (isParent) root.append(createForm(() => load()));
  root.append(list);
  view.append(root);

  let closed = false;
  const show = (missions) => {
    if (!missions.length) {
      list.replaceChildren(emptyState('✅', '아직 미션이 없어요', isParent ? '위에서 첫 미션을 만들어 보세요.' : '부모님이 미션을 주면 여기에 보여요.'));
      return;
    }
    const order = { submitted: 0, open: 1, rejected: 1, approved: 2 };
    missions.sort((a, b) => order[a.status] - order[b.status] || b.id - a.id);
    list.replaceChildren(...missions.map((m) => missionCard(m, ctx, load)));
  };
  const load = async () => {
    try {
      const { missions } = await get('/missions');
      if (closed) return;
      remember(ctx.user.id, 'missions', missions);
      show(missions);
    } catch (error) {
      if (closed) return;
      if (error.missing) list.replaceChildren(emptyState('🛠️', '미션 기능을 준비하고 있어요', '곧 만나요!'));
      // Offline: the last known list (already shown) stays.
      else if (!(error instanceof ApiError && error.unanswered && recall(ctx.user.id, 'missions'))) showError(error);
    }
  };
  const last = recall(ctx.user.id, 'missions');
  if (last) show(last);
  load();
  return () => {
    closed = true;
  };
}

function createForm(reload) {
  const form = h(
    'form',
    { class: 'card mission-form', id: 'mission-form' },
    h('h2', {}, '새 미션'),
    h('input', { name: 'title', required: true, maxlength: 200, placeholder: '예: 방 정리하기', 'aria-label': '미션 제목' }),
    h(
      'div',
      { class: 'row' },
      h('label', { class: 'inline-field' }, '🍇', h('input', { name: 'reward', type: 'number', min: '1', max: '100', value: '1', 'aria-label': '보상 포도알' }), '알'),
      h('label', { class: 'inline-field' }, '마감', h('input', { name: 'due_on', type: 'date', 'aria-label': '마감일' })),
    ),
    h('button', { class: 'button primary big', type: 'submit', 'data-needs-server': true }, '미션 만들기'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    const body = { title: data.title.trim(), reward: Number(data.reward) || 1 };
    if (data.due_on) body.due_on = data.due_on;
    busy(form.querySelector('button'), async () => {
      try {
        await post('/missions', body);
        form.reset();
        toast('미션을 만들었어요!');
        await reload();
      } catch (error) {
        showError(error);
      }
    });
  });
  return form;
}

function missionCard(mission, ctx, reload) {
  const act = (label, cls, work) => {
    const button = h('button', { class: `button small ${cls}`, type: 'button', 'aria-label': `${mission.title}: ${label}`, 'data-needs-server': true }, label);
    button.addEventListener('click', () =>
      busy(button, async () => {
        try {
          await work();
          await reload();
        } catch (error) {
          showError(error);
        }
      }),
    );
    return button;
  };
  const actions = [];
  const id = mission.id;
  let extra = null; // the inline reject form, under the buttons while open
  const toggle = (label, cls, build) => {
    const button = h('button', { class: `button small ${cls}`, type: 'button', 'aria-expanded': 'false', 'aria-label': `${mission.title}: ${label}`, 'data-needs-server': true }, label);
    button.addEventListener('click', () => {
      if (extra) {
        extra.remove();
        extra = null;
      } else {
        extra = build();
        card.append(extra);
        extra.querySelector('input')?.focus();
      }
      button.setAttribute('aria-expanded', String(Boolean(extra)));
    });
    return button;
  };
  if (ctx.user.role === 'child' && (mission.status === 'open' || mission.status === 'rejected')) {
    actions.push(act('다 했어요!', 'primary', async () => {
      await post(`/missions/${id}/submit`);
      toast('부모님께 알렸어요!');
    }));
  }
  if (ctx.user.role === 'parent' && mission.status === 'submitted') {
    actions.push(
      act('승인', 'primary', async () => {
        const res = await post(`/missions/${id}/approve`);
        if (res && res.board) ctx.board.applyBoard(res.board);
        toast(`포도알 ${mission.reward}개를 주었어요!`);
      }),
      toggle('거절', 'ghost danger reject-toggle', () => rejectForm(id, reload)),
    );
  }
  if (ctx.user.role === 'parent' && mission.status !== 'approved') {
    actions.push(act('삭제', 'ghost danger', async () => {
      if (confirm('미션을 삭제할까요?')) await del(`/missions/${id}`);
    }));
  }
  const card = h(
    'article',
    { class: `card mission mission-${mission.status}`, dataset: { missionId: id, status: mission.status } },
    h('div', { class: 'mission-head' }, h('span', { class: `status status-${mission.status}` }, STATUS[mission.status] || mission.status), h('span', { class: 'reward' }, `🍇 ${mission.reward}`)),
    h('div', { class: 'mission-title' }, mission.title),
    mission.due_on && h('div', { class: 'muted' }, `마감 ${formatDay(mission.due_on)}`),
    mission.status === 'rejected' && mission.reject_reason && h('div', { class: 'reject-reason' }, `💬 ${mission.reject_reason}`),
    actions.length ? h('div', { class: 'mission-actions' }, actions) : null,
  );
  return card;
}

/** The parent says why (optional, up to 200 characters) before rejecting. */
function rejectForm(id, reload) {
  const input = h('input', { name: 'reason', maxlength: '200', placeholder: '거절하는 이유 (선택)', 'aria-label': '거절 이유' });
  const form = h('form', { class: 'reject-form' }, input, h('button', { class: 'button small danger-fill', type: 'submit', 'data-needs-server': true }, '거절하기'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const reason = input.value.trim();
    busy(form.querySelector('button'), async () => {
      try {
        await post(`/missions/${id}/reject`, reason ? { reason } : {});
        toast('미션을 돌려보냈어요.');
        await reload();
      } catch (error) {
        showError(error);
      }
    });
  });
  return form;
}
