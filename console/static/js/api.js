// The console's only way to the server: JSON under /api, with the session cookie and its CSRF token.

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrf(token) { csrfToken = token; }
export function whenUnauthorized(handler) { onUnauthorized = handler; }

function cookie(name) {
  const found = document.cookie.split('; ').find((c) => c.startsWith(name + '='));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : null;
}

const FALLBACK = {
  400: '请求有误，请检查后再试', 401: '请先登录', 403: '没有权限查看或操作', 404: '没有找到',
  409: '操作冲突，请刷新后再试', 413: '内容太长了', 422: '内容没有通过检查', 429: '尝试太频繁，请稍后再试',
};

/** Call the API; resolves to the parsed JSON (null for 204), rejects with an ApiError carrying a Chinese message. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') {
    const token = csrfToken || cookie('siyu_csrf');
    if (token) headers['X-CSRF-Token'] = token;
  }
  let response;
  try {
    response = await fetch('/api' + path, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, '无法连接服务器，请检查网络后重试');
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = (data && data.error) || FALLBACK[response.status] || `服务器出错了（${response.status}），请稍后再试`;
    if (response.status === 401 && path !== '/session') onUnauthorized();
    throw new ApiError(response.status, message);
  }
  return data;
}

/** The URL of an operator endpoint's CSV download for the same query. */
export function csvUrl(path, params) {
  const query = new URLSearchParams({ ...params, format: 'csv' });
  return '/api' + path + '?' + query.toString();
}
