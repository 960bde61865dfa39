// The HTTP side of the API contract (API.md): bearer token, JSON in and out, one error type.
const TOKEN_KEY = 'podo.token';

const MESSAGES = {
  network: '네트워크에 연결할 수 없어요. 잠시 후 다시 시도해 주세요.',
  invalid_credentials: '아이디 또는 비밀번호가 맞지 않아요.',
  login_taken: '이미 사용 중인 아이디예요.',
  validation_failed: '입력한 내용을 다시 확인해 주세요.',
  too_many_requests: '너무 많이 시도했어요. 잠시 후 다시 시도해 주세요.',
  invite_not_found: '코드를 찾을 수 없어요. 만료되었거나 이미 사용된 코드예요.',
  already_paired: '이미 가족과 연결되어 있어요.',
  forbidden_role: '이 기능을 사용할 수 없는 역할이에요.',
  not_in_family: '먼저 가족과 연결해 주세요.',
  wish_locked: '이미 선물로 선택된 위시는 바꿀 수 없어요.',
  board_exists: '이미 진행 중인 포도판이 있어요.',
  wish_not_available: '이 위시는 선물로 고를 수 없어요.',
  board_full: '포도판이 가득 찼어요.',
  nothing_to_attach: '붙일 포도알이 없어요.',
  no_board: '진행 중인 포도판이 없어요.',
  mission_locked: '이 미션은 더 이상 바꿀 수 없어요.',
  not_found: '찾을 수 없어요.',
  unauthorized: '다시 로그인해 주세요.',
  internal: '서버에 문제가 생겼어요. 잠시 후 다시 시도해 주세요.',
};

export class ApiError extends Error {
  constructor(status, body) {
    const code = (body && body.error) || (status === 0 ? 'network' : `http_${status}`);
    super(MESSAGES[code] || (body && body.message) || `요청이 실패했어요 (${status}).`);
    this.status = status;
    this.code = code;
    this.fields = (body && body.fields) || {};
  }

  /** The endpoint is not there (yet): the server answers unknown routes with 404 not_found. */
  get missing() {
    return this.status === 404 && this.code === 'not_found';
  }
}

let unauthorizedHandler = () => {};

export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export async function api(method, path, body) {
  const token = getToken();
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, null);
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const error = new ApiError(res.status, data);
    if (res.status === 401 && token) unauthorizedHandler(error);
    throw error;
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path, body) => api('DELETE', path, body);

/** A random key for retry-safe requests (`key` in grant/attach) and chat `client_id`s. */
export function randomId(prefix = '') {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
