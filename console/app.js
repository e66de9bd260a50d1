// The console's shell: sign-in and sign-out, hash routing, the sessions list and the audit
// search. The session page lives in views.js.

import { Api } from "./api.js";
import { h, replace, snippet, link, field } from "./dom.js";
import { describeProblem, formatTime, localToRfc3339, plural, shortHash } from "./format.js";
import { sessionPage, staleNotice } from "./views.js";

const IDLE_LIMIT_MS = 15 * 60 * 1000;

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const announcer = document.getElementById("announcer");

/** What lives while signed in; `null` when signed out. */
let current = null;
/** The search of this sign-in, kept in memory (never in the URL or history). */
let search = null;

/** Says something to screen readers and shows it in the page's status line. */
export function announce(text) {
  replace(announcer, text);
}

/** An error box with the problem in plain words, also announced. */
export function errorBox(problem, context) {
  const text = describeProblem(problem, context);
  if (problem.status === 401 && current) {
    signOut("Your key is no longer accepted (wrong or revoked). Sign in again.");
  }
  return h("p", { class: "error", role: "alert" }, text);
}

function idleTimer() {
  let timer = null;
  const reset = () => {
    clearTimeout(timer);
    timer = setTimeout(() => signOut("Signed out after 15 minutes without activity."), IDLE_LIMIT_MS);
  };
  const events = ["keydown", "pointerdown", "wheel"];
  for (const event of events) document.addEventListener(event, reset, { passive: true });
  reset();
  return () => {
    clearTimeout(timer);
    for (const event of events) document.removeEventListener(event, reset);
  };
}

function signOut(message) {
  if (current) {
    current.teardown();
    current.stopIdle();
  }
  current = null;
  search = null;
  replace(nav);
  document.body.classList.remove("signed-in");
  if (location.hash && location.hash !== "#/") history.replaceState(null, "", "#/");
  signInPage(message);
}

function signInPage(message) {
  document.title = "Sign in · chatledger console";
  const key = h("input", {
    type: "password",
    name: "key",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    autocapitalize: "off",
  });
  const status = h("div", { class: "form-status" });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title", novalidate: true },
    h("h1", { id: "signin-title", tabindex: "-1" }, "Sign in"),
    h(
      "p",
      {},
      "Use an auditor key of your tenant. The key stays in this page's memory only: it is sent in the Authorization header of each request, never stored, and forgotten when you sign out, reload or close the tab, or after 15 minutes without activity.",
    ),
    field("Auditor key", key),
    button,
    status,
  );
  if (message) replace(status, h("p", { class: "notice", role: "status" }, message));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const secret = key.value.trim();
    if (!secret) {
      replace(status, h("p", { class: "error", role: "alert" }, "Enter your auditor key."));
      key.focus();
      return;
    }
    button.disabled = true;
    replace(status, h("p", { class: "notice" }, "Checking the key…"));
    const api = new Api(secret);
    try {
      // The holds listing needs the auditor role, and records nothing of any conversation.
      await api.get(["holds"]);
    } catch (problem) {
      button.disabled = false;
      const text =
        problem.status === 401
          ? "This key is not accepted: check that you copied it whole and that it has not been revoked."
          : problem.status === 403
            ? "This key is valid but it is not an auditor key: the console needs the auditor role."
            : describeProblem(problem);
      replace(status, h("p", { class: "error", role: "alert" }, text));
      key.select();
      key.focus();
      return;
    }
    key.value = "";
    signedIn(api);
  });
  replace(main, form);
  key.focus();
}

function signedIn(api) {
  current = { api, teardown: () => {}, stopIdle: idleTimer() };
  document.body.classList.add("signed-in");
  replace(
    nav,
    // The link to the page already shown reloads it (the hash does not change, so no event).
    h("a", { href: "#/", onclick: () => location.hash === "#/" && queueMicrotask(route) }, "Sessions"),
    h("button", { type: "button", class: "link-button", onclick: () => signOut("Signed out.") }, "Sign out"),
  );
  route();
}

/** Shows the page the hash names. */
function route() {
  if (!current) return;
  current.teardown();
  current.teardown = () => {};
  const hash = location.hash.replace(/^#/, "") || "/";
  const [pathPart, queryPart = ""] = hash.split("?");
  const query = new URLSearchParams(queryPart);
  const sessionMatch = /^\/sessions\/(.+)$/.exec(pathPart);
  if (sessionMatch) {
    let id;
    try {
      id = decodeURIComponent(sessionMatch[1]);
    } catch {
      id = sessionMatch[1];
    }
    const seq = Number.parseInt(query.get("seq") || "", 10);
    const page = sessionPage({
      api: current.api,
      session: id,
      seq: Number.isFinite(seq) && seq > 0 ? seq : null,
      errorBox,
      announce,
    });
    current.teardown = page.teardown;
    replace(main, page.element);
  } else {
    replace(main, sessionsPage(current.api));
  }
  const heading = main.querySelector("h1");
  if (heading) heading.focus({ preventScroll: false });
}

function sessionsPage(api) {
  document.title = "Sessions · chatledger console";
  const searchSection = searchForm(api);
  const list = h("div", { class: "sessions-list" });
  const section = h(
    "section",
    { "aria-labelledby": "list-title", class: "card" },
    h("h2", { id: "list-title" }, "All sessions"),
    h("p", { class: "hint" }, "Ordered by session id. Open one to read its transcript, verify it, export it or see who read it."),
    list,
  );
  loadSessions(api, list, null, []);
  return h(
    "div",
    { class: "page" },
    h("h1", { tabindex: "-1" }, "Sessions"),
    searchSection,
    section,
  );
}

async function loadSessions(api, list, after, history) {
  replace(list, h("p", { class: "loading" }, "Loading sessions…"));
  let page;
  try {
    page = await api.get(["sessions"], { limit: 50, after });
  } catch (problem) {
    replace(list, errorBox(problem));
    return;
  }
  if (page.sessions.length === 0) {
    replace(list, h("p", { class: "empty" }, after ? "No more sessions." : "This tenant has no sessions yet."));
    return;
  }
  const rows = page.sessions.map((s) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, link(`/sessions/${encodeURIComponent(s.session_id)}`, s.session_id)),
      h("td", {}, formatTime(s.updated_at)),
      h("td", { class: "num" }, s.last_seq.toLocaleString("en")),
      h("td", { class: "num" }, s.message_count.toLocaleString("en")),
      h("td", {}, s.holds.length ? s.holds.map((id) => `#${id}`).join(", ") : "—"),
      h("td", {}, s.closed ? "erased, closed" : "open"),
    ),
  );
  const pager = h("div", { class: "pager" });
  if (history.length > 0) {
    pager.append(
      h("button", { type: "button", onclick: () => loadSessions(api, list, history.at(-1), history.slice(0, -1)) }, "Previous page"),
    );
  }
  if (page.next_after) {
    pager.append(
      h("button", { type: "button", onclick: () => loadSessions(api, list, page.next_after, [...history, after]) }, "Next page"),
    );
  }
  replace(
    list,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Sessions of this tenant"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Session", "Last entry", "Entries", "Messages", "Legal holds", "State"].map((name) => h("th", { scope: "col" }, name)),
          ),
        ),
        h("tbody", {}, rows),
      ),
    ),
    pager,
  );
}

function searchForm(api) {
  const saved = search || {};
  const control = (name, attributes = {}) => h("input", { name, value: saved[name] || "", ...attributes });
  const q = control("q", { type: "search", placeholder: "e.g. 8892 or \"order number\"" });
  const session = control("session_id", { spellcheck: "false", autocapitalize: "off" });
  const role = h(
    "select",
    { name: "role" },
    ["", "user", "assistant", "system", "tool"].map((value) =>
      h("option", { value, selected: saved.role === value }, value || "any role"),
    ),
  );
  const author = control("author", { spellcheck: "false", placeholder: "key_…" });
  const from = control("from", { type: "datetime-local", step: "1" });
  const to = control("to", { type: "datetime-local", step: "1" });
  const metadata = control("metadata", { spellcheck: "false", placeholder: "{\"channel\": \"web\"}" });
  const results = h("div", { class: "results", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "search", role: "search", "aria-labelledby": "search-title", novalidate: true },
    field("Words or \"quoted phrases\"", q, "Every term must occur (any case, any script)."),
    h(
      "details",
      { class: "filters", open: saved.filtersOpen || false },
      h("summary", {}, "Filters"),
      h(
        "div",
        { class: "filter-grid" },
        field("Session id (exact)", session),
        field("Role", role),
        field("Author key id", author),
        field("From (your local time)", from),
        field("To (exclusive)", to),
        field("Metadata contains (JSON object)", metadata),
      ),
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Search"), h("button", { type: "reset" }, "Clear")),
  );
  const run = async (cursor, append) => {
    const params = {
      q: q.value.trim(),
      session_id: session.value.trim(),
      role: role.value,
      author: author.value.trim(),
      from: localToRfc3339(from.value),
      to: localToRfc3339(to.value),
      metadata: metadata.value.trim(),
      limit: 25,
      after: cursor,
    };
    search = {
      q: q.value,
      session_id: session.value,
      role: role.value,
      author: author.value,
      from: from.value,
      to: to.value,
      metadata: metadata.value,
      filtersOpen: form.querySelector("details").open,
    };
    if (params.from === null || params.to === null) {
      replace(results, h("p", { class: "error", role: "alert" }, "A time filter is not a valid date and time."));
      return;
    }
    if (params.metadata) {
      let parsed;
      try {
        parsed = JSON.parse(params.metadata);
      } catch {
        parsed = null;
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        replace(results, h("p", { class: "error", role: "alert" }, "The metadata filter must be a JSON object, such as {\"channel\": \"web\"}."));
        metadata.focus();
        return;
      }
    }
    const { limit, after, ...criteria } = params;
    if (!Object.values(criteria).some((value) => value)) {
      replace(results, h("p", { class: "error", role: "alert" }, "Enter words to search for, or at least one filter."));
      q.focus();
      return;
    }
    if (!append) replace(results, h("p", { class: "loading" }, "Searching…"));
    let page;
    try {
      page = await api.get(["audit", "search"], params);
    } catch (problem) {
      replace(results, errorBox(problem));
      return;
    }
    let list = results.querySelector("ol");
    if (!append || !list) {
      list = h("ol", { class: "hits" });
      replace(
        results,
        h("h3", { id: "results-title" }, "Results, newest first"),
        staleNotice(page),
        list,
      );
    }
    results.querySelector(".more")?.remove();
    for (const hit of page.results) list.append(hitItem(hit));
    const count = list.children.length;
    if (count === 0) {
      replace(results, staleNotice(page), h("p", { class: "empty", role: "status" }, "No message matches this search."));
      announce("No results.");
      return;
    }
    if (page.next) {
      results.append(h("button", { type: "button", class: "more", onclick: () => run(page.next, true) }, "More results"));
    }
    announce(`${plural(count, "result")} shown${page.next ? ", more available" : ""}.`);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(null, false);
  });
  form.addEventListener("reset", () => {
    search = null;
    replace(results);
  });
  if (saved.q || saved.session_id || saved.role || saved.author || saved.from || saved.to || saved.metadata) {
    queueMicrotask(() => run(null, false));
  }
  return h(
    "section",
    { class: "card", "aria-labelledby": "search-title" },
    h("h2", { id: "search-title" }, "Search every message"),
    form,
    results,
  );
}

function hitItem(hit) {
  const route = `/sessions/${encodeURIComponent(hit.session_id)}?seq=${hit.seq}`;
  return h(
    "li",
    { class: `hit role-${hit.role}` },
    h(
      "div",
      { class: "hit-head" },
      link(route, h("span", { class: "session-id" }, hit.session_id), ` · seq ${hit.seq}`),
      h("span", { class: "meta" }, ` ${hit.role} · ${formatTime(hit.created_at)} · ${hit.author} · ${shortHash(hit.entry?.hash)}`),
    ),
    h("p", { class: "snippet" }, snippet(hit.snippet)),
  );
}

// The skip link moves focus without touching the hash, which names the page.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", route);
signInPage(null);
