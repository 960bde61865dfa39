// Calendar: a month of due and approved missions and given gifts (GET /api/calendar).
import { get } from './api.js';
import { familyToday, formatDay, h, setFamilyTimeZone, showError, ymd } from './dom.js';

export function render(view) {
  // Days are the server's (the family's time zone), not this device's: start on the family's today.
  const today = familyToday();
  let year = Number(today.slice(0, 4));
  let month = Number(today.slice(5, 7)) - 1;
  let selected = today;
  let days = new Map();
  let missions = new Map();
  let wishes = new Map();
  let closed = false;
  let note = null;
  let loads = 0; // only the latest month's answer may be drawn (answers can arrive out of order)

  const title = h('h2', { class: 'month-title', id: 'month-title' });
  const prev = h('button', { class: 'icon-button', type: 'button', id: 'month-prev', 'aria-label': '이전 달', 'aria-controls': 'month-grid' }, '‹');
  const next = h('button', { class: 'icon-button', type: 'button', id: 'month-next', 'aria-label': '다음 달', 'aria-controls': 'month-grid' }, '›');
  const grid = h('div', { class: 'month-grid', id: 'month-grid' });
  const detail = h('div', { class: 'card day-detail', id: 'day-detail' });
  const legend = h(
    'div',
    { class: 'legend' },
    h('span', {}, h('i', { class: 'dot due' }), '마감 미션'),
    h('span', {}, h('i', { class: 'dot approved' }), '승인된 미션'),
    h('span', {}, h('i', { class: 'dot gift' }), '받은 선물'),
  );
  const status = h('p', { class: 'muted center', id: 'calendar-note' });
  view.append(h('section', { class: 'screen calendar-screen' }, h('h1', { class: 'screen-title' }, '캘린더'), h('div', { class: 'card' }, h('div', { class: 'month-nav' }, prev, title, next), weekdayRow(), grid, legend), status, detail));

  prev.addEventListener('click', () => shift(-1));
  next.addEventListener('click', () => shift(1));

  function shift(delta) {
    month += delta;
    if (month < 0) {
      month = 11;
      year -= 1;
    } else if (month > 11) {
      month = 0;
      year += 1;
    }
    const today = familyToday();
    const shown = `${year}-${String(month + 1).padStart(2, '0')}`;
    selected = today.startsWith(shown) ? today : `${shown}-01`;
    load();
  }

  async function load() {
    const from = ymd(new Date(year, month, 1));
    const to = ymd(new Date(year, month + 1, 0));
    const ticket = (loads += 1);
    const current = () => !closed && ticket === loads;
    days = new Map();
    grid.dataset.loaded = 'false';
    draw();
    try {
      const [calendar, missionList, wishList] = await Promise.all([
        get(`/calendar?from=${from}&to=${to}`),
        get('/missions').catch(() => ({ missions: [] })),
        get('/wishes').catch(() => ({ wishes: [] })),
      ]);
      if (!current()) return;
      setFamilyTimeZone(calendar.time_zone);
      days = new Map(calendar.days.map((d) => [d.date, d]));
      missions = new Map(missionList.missions.map((m) => [m.id, m]));
      wishes = new Map(wishList.wishes.map((w) => [w.id, w]));
      note = null;
    } catch (error) {
      if (!current()) return;
      days = new Map();
      if (error.missing) note = '캘린더 기능을 준비하고 있어요.';
      else if (error.unanswered) note = '오프라인이라 캘린더를 불러올 수 없어요. 연결되면 다시 보여 드릴게요.';
      else showError(error);
    }
    grid.dataset.loaded = `${year}-${String(month + 1).padStart(2, '0')}`;
    draw();
  }

  function draw() {
    title.textContent = `${year}년 ${month + 1}월`;
    status.textContent = note || '';
    status.hidden = !note;
    const first = new Date(year, month, 1).getDay();
    const count = new Date(year, month + 1, 0).getDate();
    const today = familyToday();
    const cells = [];
    for (let i = 0; i < first; i += 1) cells.push(h('div', { class: 'day blank' }));
    for (let d = 1; d <= count; d += 1) {
      const date = ymd(new Date(year, month, d));
      const entry = days.get(date);
      const dots = [];
      if (entry) {
        if (entry.missions_due.length) dots.push(h('i', { class: 'dot due' }));
        if (entry.missions_approved.length) dots.push(h('i', { class: 'dot approved' }));
        if (entry.gifts_given.length) dots.push(h('i', { class: 'dot gift' }));
      }
      const marks = [];
      if (entry && entry.missions_due.length) marks.push(`마감 미션 ${entry.missions_due.length}개`);
      if (entry && entry.missions_approved.length) marks.push(`승인된 미션 ${entry.missions_approved.length}개`);
      if (entry && entry.gifts_given.length) marks.push(`받은 선물 ${entry.gifts_given.length}개`);
      const cell = h(
        'button',
        {
          type: 'button',
          class: `day${date === today ? ' today' : ''}${date === selected ? ' selected' : ''}${(first + d - 1) % 7 === 0 ? ' sunday' : ''}`,
          dataset: { date },
          'aria-pressed': date === selected ? 'true' : 'false',
          'aria-current': date === today ? 'date' : null,
        },
        h('span', { class: 'day-number' }, d),
        // Read as "3일 (목), 오늘, 마감 미션 1개": the month is the heading above the grid.
        h('span', { class: 'sr-only' }, [`일 (${'일월화수목금토'[(first + d - 1) % 7]})`, date === today ? '오늘' : '', ...marks].filter(Boolean).join(', ')),
        h('span', { class: 'dots' }, dots),
      );
      cell.addEventListener('click', () => {
        selected = date;
        draw();
      });
      cells.push(cell);
    }
    grid.replaceChildren(...cells);
    drawDetail();
  }

  function drawDetail() {
    const entry = days.get(selected);
    const items = [];
    if (entry) {
      for (const id of entry.missions_due) items.push(h('li', {}, h('i', { class: 'dot due' }), `마감: ${missions.get(id)?.title ?? `미션 #${id}`}`));
      for (const id of entry.missions_approved) items.push(h('li', {}, h('i', { class: 'dot approved' }), `승인: ${missions.get(id)?.title ?? `미션 #${id}`}`));
      for (const id of entry.gifts_given) items.push(h('li', {}, h('i', { class: 'dot gift' }), `선물: ${wishes.get(id)?.name ?? `선물 #${id}`}`));
    }
    detail.replaceChildren(h('h3', {}, formatDay(selected)), items.length ? h('ul', { class: 'day-items' }, items) : h('p', { class: 'muted' }, '이날은 일정이 없어요.'));
  }

  load();
  return () => {
    closed = true;
  };
}

function weekdayRow() {
  return h('div', { class: 'weekdays', 'aria-hidden': 'true' }, ...'일월화수목금토'.split('').map((d) => h('span', {}, d)));
}
