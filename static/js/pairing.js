// Pairing: the parent shows an invite code with its countdown, the child enters it.
import { post } from './api.js';
import { busy, h, showError } from './dom.js';

const POLL_MS = 2500;

export function render(view, ctx) {
  const timers = [];
  const stop = () => timers.forEach((t) => clearInterval(t));
  if (ctx.user.role === 'parent') view.append(parentView(ctx, timers));
  else view.append(childView(ctx));
  return stop;
}

function parentView(ctx, timers) {
  const codeBox = h('div', { class: 'invite', id: 'invite' });
  const button = h('button', { class: 'button primary big', id: 'invite-button', type: 'button', 'data-needs-server': true }, '초대 코드 만들기');
  let countdown;

  const showCode = ({ code, expires_at: expiresAt }) => {
    clearInterval(countdown);
    const timeLeft = h('span', { class: 'invite-timer', id: 'invite-timer' });
    codeBox.replaceChildren(
      h('p', { class: 'muted' }, '자녀의 앱에서 이 코드를 입력하세요'),
      h('div', { class: 'invite-code', id: 'invite-code' }, ...code.split('').map((c) => h('span', {}, c))),
      h('p', {}, timeLeft),
    );
    const tick = () => {
      const left = Math.max(0, Math.round((Date.parse(expiresAt) - Date.now()) / 1000));
      timeLeft.textContent = left > 0 ? `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')} 후 만료` : '코드가 만료되었어요. 새 코드를 만들어 주세요.';
      codeBox.classList.toggle('expired', left === 0);
      if (left === 0) clearInterval(countdown);
    };
    tick();
    countdown = setInterval(tick, 1000);
    timers.push(countdown);
    button.textContent = '새 코드 만들기';
  };

  button.addEventListener('click', () =>
    busy(button, async () => {
      try {
        showCode(await post('/family/invite'));
      } catch (error) {
        if (error.code === 'already_paired') await ctx.refreshMe().then(() => ctx.navigate('board'));
        else showError(error);
      }
    }),
  );

  // Wait for the child to join: the parent's screen moves on by itself.
  timers.push(
    setInterval(async () => {
      try {
        const me = await ctx.refreshMe();
        if (me.family) ctx.navigate('board');
      } catch {
        /* offline for a moment: try again on the next tick */
      }
    }, POLL_MS),
  );

  return h(
    'section',
    { class: 'screen pairing' },
    h('div', { class: 'card center' }, h('div', { class: 'big-emoji', 'aria-hidden': 'true' }, '👨‍👧'), h('h1', {}, '자녀와 연결하기'), h('p', { class: 'muted' }, '초대 코드를 만들어 자녀에게 알려 주세요. 코드는 10분 동안 한 번만 쓸 수 있어요.'), codeBox, button),
  );
}

function childView(ctx) {
  const input = h('input', { name: 'code', id: 'join-code', class: 'code-input', maxlength: 12, required: true, autocomplete: 'off', autocapitalize: 'characters', placeholder: 'ABCD2345', 'aria-label': '초대 코드' });
  const form = h(
    'form',
    { class: 'card center', id: 'join-form' },
    h('div', { class: 'big-emoji', 'aria-hidden': 'true' }, '🔗'),
    h('h1', {}, '부모님과 연결하기'),
    h('p', { class: 'muted' }, '부모님 앱에 보이는 8자리 초대 코드를 입력하세요.'),
    input,
    h('button', { class: 'button primary big', type: 'submit', 'data-needs-server': true }, '연결하기'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    busy(form.querySelector('button'), async () => {
      try {
        await post('/family/join', { code: input.value.trim().toUpperCase() });
        await ctx.refreshMe();
        ctx.navigate('board');
      } catch (error) {
        showError(error);
      }
    });
  });
  return h('section', { class: 'screen pairing' }, form);
}
