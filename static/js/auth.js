// Log in and sign up.
import { ApiError, post } from './api.js';
import { busy, h, showError } from './dom.js';

export function render(view, ctx, name) {
  view.append(name === 'signup' ? signupForm(ctx) : loginForm(ctx));
}

function hero(subtitle) {
  return h(
    'div',
    { class: 'hero' },
    h('img', { class: 'hero-icon', src: '/media/icon.svg', alt: '' }),
    h('h1', {}, '포도'),
    h('p', {}, subtitle),
  );
}

function field(label, input, hint) {
  return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), input, hint && h('span', { class: 'field-hint' }, hint));
}

function fieldErrors(form, error) {
  for (const el of form.querySelectorAll('.field-error')) el.remove();
  if (!(error instanceof ApiError)) return;
  for (const [name, reason] of Object.entries(error.fields)) {
    const input = form.querySelector(`[name="${name}"]`);
    if (input) input.closest('.field').append(h('span', { class: 'field-error' }, reason));
  }
}

function loginForm(ctx) {
  const form = h(
    'form',
    { class: 'card auth-card', id: 'login-form' },
    h('h2', {}, '로그인'),
    field('아이디', h('input', { name: 'login', autocomplete: 'username', required: true, autocapitalize: 'off' })),
    field('비밀번호', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
    h('button', { class: 'button primary big', type: 'submit', 'data-needs-server': true }, '로그인'),
    h('p', { class: 'switch' }, '처음이신가요? ', h('a', { href: '#/signup', id: 'to-signup' }, '회원가입')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    busy(form.querySelector('button[type=submit]'), async () => {
      try {
        const res = await post('/auth/login', { login: data.login.trim(), password: data.password });
        await ctx.signedIn(res.token);
      } catch (error) {
        showError(error);
      }
    });
  });
  return h('section', { class: 'screen auth' }, hero('가족이 함께 키우는 포도송이'), form);
}

function signupForm(ctx) {
  const roleOption = (value, label, icon) =>
    h(
      'label',
      { class: 'role-option' },
      h('input', { type: 'radio', name: 'role', value, required: true }),
      h('span', { class: 'role-card' }, h('span', { class: 'role-icon', 'aria-hidden': 'true' }, icon), label),
    );
  const form = h(
    'form',
    { class: 'card auth-card', id: 'signup-form' },
    h('h2', {}, '회원가입'),
    h('div', { class: 'role-picker' }, roleOption('parent', '부모', '🧑‍🍼'), roleOption('child', '자녀', '🧒')),
    field('아이디', h('input', { name: 'login', autocomplete: 'username', required: true, minlength: 4, maxlength: 20, pattern: '[A-Za-z0-9_]{4,20}', autocapitalize: 'off' }), '영문, 숫자, _ 4-20자'),
    field('이름', h('input', { name: 'name', autocomplete: 'nickname', required: true, maxlength: 30 })),
    field('비밀번호', h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 128 }), '8자 이상'),
    h('button', { class: 'button primary big', type: 'submit', 'data-needs-server': true }, '가입하기'),
    h('p', { class: 'switch' }, '이미 계정이 있나요? ', h('a', { href: '#/login' }, '로그인')),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    busy(form.querySelector('button[type=submit]'), async () => {
      try {
        const login = data.login.trim();
        await post('/auth/signup', { login, name: data.name.trim(), password: data.password, role: data.role });
        const res = await post('/auth/login', { login, password: data.password });
        await ctx.signedIn(res.token);
      } catch (error) {
        fieldErrors(form, error);
        showError(error);
      }
    });
  });
  return h('section', { class: 'screen auth' }, hero('부모와 자녀가 함께 모으는 포도알'), form);
}
