// The HTTP side of the API contract (API.md): bearer token, JSON in and out, one error type.
import { reportReachable, reportUnreachable } from './connectivity.js';

const TOKEN_KEY = 'podo.token';

/** How long a request may go unanswered before it counts as lost (the retry keeps its key). */
const REQUEST_TIMEOUT_MS = 15000;

/**
 * A Korean text for every error code of the contract (API.md; the browser test checks this list
 * against it and against the server's source), and for the client's own `network` and `timeout`.
 * The server's English `message` is never shown.
 */
const MESSAGES = {
  network: '서버에 연결할 수 없어요. 연결되면 다시 시도해 주세요.',
  timeout: '응답이 늦어지고 있어요. 다시 시도해 주세요.',
  // Everywhere
  bad_request: '요청을 처리할 수 없어요.',
  invalid_json: '요청을 처리할 수 없어요. 앱을 새로 고쳐 주세요.',
  unsupported_media_type: '요청을 처리할 수 없어요. 앱을 새로 고쳐 주세요.',
  method_not_allowed: '지원하지 않는 요청이에요. 앱을 새로 고쳐 주세요.',
  unauthorized: '다시 로그인해 주세요.',
  forbidden_role: '이 기능을 사용할 수 없는 역할이에요.',
  not_in_family: '먼저 가족과 연결해 주세요.',
  not_found: '찾을 수 없어요.',
  request_timeout: '요청이 너무 오래 걸렸어요. 다시 시도해 주세요.',
  payload_too_large: '내용이 너무 커요. 줄여서 다시 시도해 주세요.',
  validation_failed: '입력한 내용을 다시 확인해 주세요.',
  too_many_requests: '너무 많이 시도했어요. 잠시 후 다시 시도해 주세요.',
  too_many_sessions: '열려 있는 창이 너무 많아요. 다른 창을 닫고 다시 시도해 주세요.',
  internal: '서버에 문제가 생겼어요. 잠시 후 다시 시도해 주세요.',
  busy: '지금 사용하는 사람이 많아요. 잠시 후 다시 시도해 주세요.',
  unavailable: '서버를 잠시 사용할 수 없어요. 잠시 후 다시 시도해 주세요.',
  storage_full: '서버의 저장 공간이 가득 찼어요. 잠시 후 다시 시도해 주세요.',
  conflict: '다른 곳에서 먼저 바뀌었어요. 다시 시도해 주세요.',
  // Accounts and pairing
  login_taken: '이미 사용 중인 아이디예요.',
  invalid_credentials: '아이디 또는 비밀번호가 맞지 않아요.',
  already_paired: '이미 가족과 연결되어 있어요.',
  invite_not_found: '코드를 찾을 수 없어요. 만료되었거나 이미 사용된 코드예요.',
  // Wishes, board, missions
  wish_locked: '이미 선물로 선택된 위시는 바꿀 수 없어요.',
  board_exists: '이미 진행 중인 포도판이 있어요.',
  wish_not_available: '이 위시는 선물로 고를 수 없어요.',
  board_full: '포도판이 가득 찼어요.',
  nothing_to_attach: '붙일 포도알이 없어요.',
  no_board: '진행 중인 포도판이 없어요.',
  mission_locked: '이 미션은 더 이상 바꿀 수 없어요.',
  // Chat (WebSocket `error` frames)
  invalid_frame: '메시지를 보내지 못했어요.',
  invalid_text: '보낼 수 없는 글자가 들어 있어요.',
  invalid_client_id: '메시지를 보내지 못했어요. 앱을 새로 고쳐 주세요.',
  text_empty: '메시지를 입력해 주세요.',
  text_too_long: '메시지가 너무 길어요.',
  not_stored: '메시지를 저장하지 못해서 다시 보내고 있어요.',
  too_many_pending: '보내는 중인 메시지가 많아요. 잠시 후 다시 보낼게요.',
};

/** The Korean text for an error code (also the chat's `error` frames). */
export function errorText(code, status) {
  return MESSAGES[code] || (status ? `요청이 실패했어요 (${status}).` : '요청이 실패했어요.');
}

export class ApiError extends Error {
  constructor(status, body) {
    const code = (body && body.error) || (status === 0 ? 'network' : `http_${status}`);
    super(errorText(code, status));
    this.status = status;
    this.code = code;
    this.fields = (body && body.fields) || {};
  }

  /**
   * No answer came (no connection, or none within the timeout): the request may or may not
   * have been applied, so a retry must send the same idempotency key.
   */
  get unanswered() {
    return this.status === 0;
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
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    res = await fetch(`/api${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal: abort.signal,
    });
  } catch {
    clearTimeout(timer);
    const timedOut = abort.signal.aborted;
    reportUnreachable();
    throw new ApiError(0, timedOut ? { error: 'timeout' } : null);
  }
  clearTimeout(timer);
  reportReachable();
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
