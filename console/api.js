// The chatledger API as the console uses it. The key lives only in this object (in memory) and
// travels only in the Authorization header: never in storage, a cookie or a URL.

/** A failed request: a problem document, or status 0 when the server could not be reached. */
export class Problem extends Error {
  constructor(fields) {
    super(fields.detail || fields.title || `HTTP ${fields.status}`);
    Object.assign(this, fields);
  }
}

/** Reads a failed response's problem document (falling back to its status). */
export async function readProblem(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // Not JSON: keep the status alone.
  }
  const retryAfter = response.headers.get("Retry-After");
  return new Problem({
    status: response.status,
    code: typeof body.code === "string" ? body.code : "",
    title: typeof body.title === "string" ? body.title : response.statusText,
    detail: typeof body.detail === "string" ? body.detail : "",
    holds: Array.isArray(body.holds) ? body.holds : [],
    retryAfter: retryAfter && /^\d+$/.test(retryAfter) ? Number(retryAfter) : null,
  });
}

/** The replica lag each answer read from a replica came with (`Chatledger-Replica-Lag-Ms`). */
const lags = new WeakMap();

/** How many milliseconds the replica an answer was read from may be behind; null for none. */
export function replicaLag(body) {
  return lags.has(body) ? lags.get(body) : null;
}

/** `/v1/...` with `params` (empty ones left out), each segment of `parts` escaped. */
export function path(parts, params = {}) {
  const segments = parts.map((part) => encodeURIComponent(String(part))).join("/");
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const search = query.toString();
  return `/v1/${segments}${search ? `?${search}` : ""}`;
}

export class Api {
  #key;

  constructor(key) {
    this.#key = key;
  }

  async #fetch(url, init = {}) {
    const headers = { ...(init.headers || {}), Authorization: `Bearer ${this.#key}` };
    let response;
    try {
      response = await fetch(url, {
        ...init,
        headers,
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
      });
    } catch (error) {
      if (error && error.name === "AbortError") throw error;
      throw new Problem({ status: 0, code: "network", title: "Network error", detail: String(error) });
    }
    if (!response.ok) throw await readProblem(response);
    return response;
  }

  async get(parts, params) {
    const response = await this.#fetch(path(parts, params), { headers: { Accept: "application/json" } });
    const body = await response.json();
    const lag = response.headers.get("Chatledger-Replica-Lag-Ms");
    if (lag !== null && /^\d+$/.test(lag) && body && typeof body === "object") lags.set(body, Number(lag));
    return body;
  }

  async post(parts, body) {
    const response = await this.#fetch(path(parts), {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return response.status === 204 ? null : response.json();
  }

  async delete(parts) {
    await this.#fetch(path(parts), { method: "DELETE" });
  }

  /** The raw response, for the export download. */
  async raw(parts, params) {
    return this.#fetch(path(parts, params));
  }

  /** Opens the live tail; failures come back as responses, for the follower to judge. */
  stream(parts, params, headers, signal) {
    return fetch(path(parts, params), {
      headers: { ...headers, Authorization: `Bearer ${this.#key}` },
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      signal,
    });
  }
}
