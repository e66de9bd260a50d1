// The session page: summary, transcript (paged, so any length stays light), verify, export,
// access records, legal holds, erasure and the live tail.

import { h, replace, field } from "./dom.js";
import { contentParts, describeLag, describeVerify, formatTime, pageStart, plural, shortHash, describeProblem } from "./format.js";
import { follow } from "./sse.js";
import { Problem, readProblem, replicaLag } from "./api.js";

/** Entries per transcript page. */
const PAGE = 100;
/** Entries kept on screen while following live; older ones leave the page. */
const LIVE_KEEP = 300;

/** A warning beside an answer from a replica that may be behind, or nothing. */
export function staleNotice(body) {
  const text = describeLag(replicaLag(body));
  return text ? h("p", { class: "notice stale", role: "status" }, text) : null;
}

export function sessionPage({ api, session, seq, errorBox, announce }) {
  document.title = `${session} · chatledger console`;
  const controller = new AbortController();
  let summary = null;
  let live = null;

  const summaryBox = h("div", { class: "summary" }, h("p", { class: "loading" }, "Loading the session…"));
  const verifyBox = h("div", { class: "verify-result", "aria-live": "polite" });
  const toolStatus = h("div", { class: "tool-status", "aria-live": "polite" });
  const transcript = h("ol", { class: "transcript", "aria-label": "Transcript" });
  const rangeLabel = h("p", { class: "range", "aria-live": "polite" });
  const pagerTop = h("nav", { class: "pager", "aria-label": "Transcript pages" });
  const liveStatus = h("p", { class: "live-status", "aria-live": "polite" });
  const accessBox = h("div", { class: "access" });
  const holdsBox = h("div", { class: "holds" });
  const eraseBox = h("div", { class: "erase" });
  const dialog = document.getElementById("confirm");

  const verifyButton = h("button", { type: "button", onclick: verify }, "Verify");
  const exportButton = h("button", { type: "button", onclick: download }, "Download export");
  const liveButton = h("button", { type: "button", onclick: toggleLive }, "Follow live");
  const accessButton = h("button", { type: "button", onclick: () => loadAccess(null) }, "Show who accessed this session");

  let pageAfter = seq ? pageStart(seq, PAGE) : 0;

  const element = h(
    "div",
    { class: "page session-page" },
    h("p", { class: "breadcrumb" }, h("a", { href: "#/" }, "← Sessions")),
    h("h1", { tabindex: "-1" }, "Session ", h("span", { class: "session-id" }, session)),
    summaryBox,
    h("div", { class: "toolbar", role: "group", "aria-label": "Session actions" }, verifyButton, exportButton, liveButton),
    verifyBox,
    toolStatus,
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "card transcript-card", "aria-labelledby": "transcript-title" },
        h("h2", { id: "transcript-title" }, "Transcript"),
        rangeLabel,
        pagerTop,
        transcript,
        liveStatus,
      ),
      h(
        "div",
        { class: "side" },
        h("section", { class: "card", "aria-labelledby": "access-title" }, h("h2", { id: "access-title" }, "Who accessed it"), accessButton, accessBox),
        h("section", { class: "card", "aria-labelledby": "holds-title" }, h("h2", { id: "holds-title" }, "Legal holds"), holdsBox),
        h("section", { class: "card danger-zone", "aria-labelledby": "erase-title" }, h("h2", { id: "erase-title" }, "Erase"), eraseBox),
      ),
    ),
  );

  loadSummary().then((ok) => {
    if (ok) loadPage(pageAfter, seq);
  });

  async function loadSummary() {
    try {
      summary = await api.get(["sessions", session]);
    } catch (problem) {
      if (controller.signal.aborted) return false;
      replace(summaryBox, errorBox(problem, { session }));
      if (problem.code === "session_not_found" || problem.code === "invalid_session_id") {
        for (const button of [verifyButton, exportButton, liveButton, accessButton]) button.disabled = true;
        replace(transcript);
        replace(rangeLabel, "Nothing to show.");
      }
      return false;
    }
    renderSummary();
    renderHolds();
    renderErase();
    return true;
  }

  function renderSummary() {
    const item = (term, value) => [h("dt", {}, term), h("dd", {}, value)];
    replace(
      summaryBox,
      h(
        "dl",
        {},
        item("Entries", `${summary.last_seq.toLocaleString("en")} (seq 1 to ${summary.last_seq})`),
        item("Messages", summary.message_count.toLocaleString("en")),
        item("Created", formatTime(summary.created_at)),
        item("Last entry", formatTime(summary.updated_at)),
        item("Context starts after", summary.context_start_seq ? `seq ${summary.context_start_seq} (reset)` : "the start"),
        item("Head hash", h("code", { title: summary.head_hash }, shortHash(summary.head_hash))),
        item("State", summary.closed ? "erased and closed" : "open"),
        item("Legal holds", summary.holds.length ? summary.holds.map((id) => `#${id}`).join(", ") : "none"),
      ),
    );
  }

  // ---- transcript ----------------------------------------------------------------------

  async function loadPage(after, focusSeq) {
    pageAfter = after;
    replace(rangeLabel, "Loading entries…");
    const entries = [];
    let cursor = after;
    let lastSeq = summary.last_seq;
    try {
      // A page may stop short at the server's byte limit; its cursor says where to go on.
      while (entries.length < PAGE && cursor !== null) {
        const page = await api.get(["sessions", session, "messages"], { after_seq: cursor, limit: PAGE - entries.length });
        entries.push(...page.entries);
        cursor = page.next_after_seq;
        lastSeq = page.last_seq;
      }
    } catch (problem) {
      if (controller.signal.aborted) return;
      replace(rangeLabel, errorBox(problem, { session }));
      return;
    }
    if (controller.signal.aborted) return;
    summary.last_seq = Math.max(summary.last_seq, lastSeq);
    replace(transcript, entries.map(entryItem));
    renderRange();
    renderPager();
    if (focusSeq) {
      const target = transcript.querySelector(`[data-seq="${focusSeq}"]`);
      if (target) {
        target.classList.add("target");
        target.focus();
        target.scrollIntoView({ block: "center" });
      }
    }
  }

  function shownSeqs() {
    const items = transcript.querySelectorAll("[data-seq]");
    if (items.length === 0) return null;
    return [Number(items[0].dataset.seq), Number(items[items.length - 1].dataset.seq), items.length];
  }

  function renderRange() {
    const shown = shownSeqs();
    replace(
      rangeLabel,
      shown
        ? `Entries ${shown[0].toLocaleString("en")} to ${shown[1].toLocaleString("en")} of ${summary.last_seq.toLocaleString("en")}, in order.`
        : "This session has no entries.",
    );
  }

  function renderPager() {
    const last = pageStart(summary.last_seq, PAGE);
    const jumpInput = h("input", { type: "number", min: "1", max: String(summary.last_seq), inputmode: "numeric", class: "seq-input" });
    const jump = h(
      "form",
      { class: "jump", novalidate: true },
      field("Go to seq", jumpInput),
      h("button", { type: "submit", disabled: live !== null }, "Go"),
    );
    jumpInput.disabled = live !== null;
    jump.addEventListener("submit", (event) => {
      event.preventDefault();
      const target = Number.parseInt(jumpInput.value, 10);
      if (!Number.isFinite(target) || target < 1 || target > summary.last_seq) {
        replace(rangeLabel, `Enter a seq from 1 to ${summary.last_seq}.`);
        jumpInput.focus();
        return;
      }
      loadPage(pageStart(target, PAGE), target);
    });
    const button = (label, after, disabled) =>
      h("button", { type: "button", disabled, onclick: () => loadPage(after, null) }, label);
    replace(
      pagerTop,
      button("First", 0, pageAfter === 0 || live !== null),
      button("Previous", Math.max(0, pageAfter - PAGE), pageAfter === 0 || live !== null),
      button("Next", pageAfter + PAGE, pageAfter + PAGE >= summary.last_seq || live !== null),
      button("Last", last, pageAfter >= last || live !== null),
      jump,
    );
  }

  function entryItem(entry) {
    const kind = entry.kind;
    const classes = ["entry", `kind-${kind}`];
    if (entry.role) classes.push(`role-${entry.role}`);
    if (entry.erased) classes.push("erased");
    const label = kind === "message" ? entry.role : kind === "context_reset" ? "context reset" : "erasure";
    const head = h(
      "div",
      { class: "entry-head" },
      h("span", { class: "seq" }, `#${entry.seq}`),
      h("span", { class: "role" }, label),
      h("time", { datetime: entry.created_at }, formatTime(entry.created_at)),
      h("span", { class: "author", title: "The key that wrote it" }, entry.author),
      h("code", { class: "hash", title: `hash ${entry.hash}` }, shortHash(entry.hash)),
      entry.erased ? h("span", { class: "badge" }, "erased") : null,
    );
    let body;
    if (kind === "context_reset") {
      body = h("p", { class: "marker" }, "The context window starts again after this entry. Nothing was erased.");
    } else if (kind === "erasure") {
      const m = entry.metadata || {};
      body = h(
        "p",
        { class: "marker" },
        `Erased the content of ${plural(Number(m.erased_count) || 0, "message")} through seq ${m.erased_through_seq ?? "?"}. Reason: `,
        h("q", {}, String(m.reason ?? "")),
      );
    } else if (entry.erased) {
      body = h("p", { class: "erased-note" }, "Content erased. Its digest remains, so the chain still verifies.");
    } else {
      body = h(
        "div",
        { class: "content" },
        contentParts(entry.content).map((part) => (part.json ? h("pre", { class: "block" }, part.text) : h("p", { class: "text" }, part.text))),
      );
    }
    const metadata =
      kind === "message" && entry.metadata && Object.keys(entry.metadata).length > 0
        ? h("details", { class: "metadata" }, h("summary", {}, "Metadata"), h("pre", {}, JSON.stringify(entry.metadata, null, 2)))
        : null;
    return h("li", { class: classes.join(" "), dataset: { seq: String(entry.seq) }, tabindex: "-1" }, head, body, metadata);
  }

  // ---- verify and export ---------------------------------------------------------------

  async function verify() {
    verifyButton.disabled = true;
    replace(verifyBox, h("p", { class: "loading" }, "Verifying the whole chain…"));
    try {
      const result = await api.get(["sessions", session, "verify"]);
      const words = describeVerify(result);
      replace(
        verifyBox,
        h(
          "div",
          { class: words.ok ? "verdict ok" : "verdict bad", role: "status" },
          h("p", { class: "headline" }, words.headline),
          words.detail ? h("p", {}, words.detail) : null,
        ),
        staleNotice(result),
      );
      announce(words.headline);
    } catch (problem) {
      replace(verifyBox, errorBox(problem, { session }));
    } finally {
      verifyButton.disabled = false;
    }
  }

  async function download() {
    exportButton.disabled = true;
    replace(toolStatus, h("p", { class: "loading" }, "Preparing the export (it waits for the next signed checkpoint)…"));
    try {
      const response = await api.raw(["sessions", session, "export"]);
      const blob = await completeExport(response);
      const url = URL.createObjectURL(blob);
      const anchor = h("a", { href: url, download: `${session}.ndjson`, class: "visually-hidden" }, "export");
      document.body.append(anchor);
      anchor.click();
      anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      replace(toolStatus, h("p", { class: "notice", role: "status" }, `Export downloaded as ${session}.ndjson (${plural(blob.size, "byte")}). Check it offline with chatledger verify-export.`));
    } catch (problem) {
      replace(toolStatus, errorBox(problem, { session }));
    } finally {
      exportButton.disabled = false;
    }
  }

  /** The export's bytes, or a Problem when the transfer broke off or ended without its trailer. */
  async function completeExport(response) {
    const incomplete = new Problem({ status: 0, code: "export_incomplete", title: "Export incomplete" });
    let blob;
    try {
      blob = await response.blob();
    } catch {
      throw incomplete;
    }
    const tail = await blob.slice(Math.max(0, blob.size - 65536)).text();
    if (!tail.trimEnd().split("\n").pop().startsWith('{"export_trailer":')) throw incomplete;
    return blob;
  }

  // ---- access records ------------------------------------------------------------------

  async function loadAccess(after) {
    if (!after) replace(accessBox, h("p", { class: "loading" }, "Loading access records…"));
    let page;
    try {
      page = await api.get(["audit", "access"], { session_id: session, after_id: after, limit: 100 });
    } catch (problem) {
      replace(accessBox, errorBox(problem, { session }));
      return;
    }
    let body = accessBox.querySelector("tbody");
    if (!after || !body) {
      body = h("tbody");
      replace(
        accessBox,
        staleNotice(page),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "access-table" },
            h("caption", { class: "visually-hidden" }, "Access records of this session, oldest first"),
            h("thead", {}, h("tr", {}, ["When", "Who", "Role", "Action", "What", "Status"].map((n) => h("th", { scope: "col" }, n)))),
            body,
          ),
        ),
      );
    }
    accessBox.querySelector(".more")?.remove();
    for (const record of page.records) {
      body.append(
        h(
          "tr",
          {},
          h("td", {}, formatTime(record.at)),
          h("td", { class: "actor" }, record.actor, record.client_addr ? h("small", {}, ` from ${record.client_addr}`) : null),
          h("td", {}, record.role ?? ""),
          h("td", { class: "action" }, record.action),
          h("td", {}, h("code", {}, JSON.stringify(record.detail ?? {}))),
          h("td", { class: "num" }, String(record.status ?? "")),
        ),
      );
    }
    if (body.children.length === 0) replace(accessBox, h("p", { class: "empty" }, "No access records yet."));
    if (page.next_after_id) {
      accessBox.append(h("button", { type: "button", class: "more", onclick: () => loadAccess(page.next_after_id) }, "More records"));
    }
  }

  // ---- legal holds ---------------------------------------------------------------------

  async function renderHolds() {
    replace(holdsBox, h("p", { class: "loading" }, "Loading holds…"));
    let holds;
    try {
      holds = (await api.get(["holds"])).holds;
    } catch (problem) {
      replace(holdsBox, errorBox(problem));
      return;
    }
    const covering = holds.filter((hold) => hold.released_at === null && hold.session_ids.includes(session));
    const others = holds.filter((hold) => hold.released_at === null && !hold.session_ids.includes(session));
    const list = covering.length
      ? h(
          "ul",
          { class: "hold-list" },
          covering.map((hold) =>
            h(
              "li",
              {},
              h("strong", {}, hold.name),
              ` (#${hold.id}), placed ${formatTime(hold.placed_at)} by ${hold.placed_by}`,
              hold.reason ? [h("br"), "Reason: ", h("q", {}, hold.reason)] : null,
              h("br"),
              h("button", { type: "button", onclick: () => release(hold) }, `Release hold ${hold.name}`),
            ),
          ),
        )
      : h("p", { class: "empty" }, "No legal hold covers this session: it can be erased, and retention applies.");
    const name = h("input", { name: "name", required: true, maxlength: "200" });
    const reason = h("input", { name: "reason", maxlength: "1000" });
    const place = h(
      "form",
      { class: "place-hold", novalidate: true },
      h("h3", {}, "Place a new hold on this session"),
      field("Hold name (matter)", name),
      field("Reason", reason),
      h("button", { type: "submit" }, "Place hold"),
    );
    place.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!name.value.trim()) {
        replace(toolStatus, h("p", { class: "error", role: "alert" }, "Give the hold a name."));
        name.focus();
        return;
      }
      await act(() => api.post(["holds"], { name: name.value.trim(), reason: reason.value, session_ids: [session] }), (hold) => `Hold ${hold.name} (#${hold.id}) placed.`);
    });
    let add = null;
    if (others.length) {
      const select = h("select", { name: "hold" }, others.map((hold) => h("option", { value: String(hold.id) }, `${hold.name} (#${hold.id})`)));
      add = h("form", { class: "add-hold", novalidate: true }, h("h3", {}, "Or add it to an existing hold"), field("Hold", select), h("button", { type: "submit" }, "Add to hold"));
      add.addEventListener("submit", async (event) => {
        event.preventDefault();
        await act(() => api.post(["holds", select.value, "sessions"], { session_ids: [session] }), () => `Session added to hold #${select.value}.`);
      });
    }
    replace(holdsBox, list, place, add);
  }

  async function release(hold) {
    const others = hold.session_ids.filter((id) => id !== session);
    const confirmed = await confirmDialog(
      `Release legal hold ${hold.name}?`,
      [
        `Hold #${hold.id} covers ${plural(hold.session_ids.length, "session")}. Releasing it lifts it from all of them`,
        others.length ? ` (also: ${others.join(", ")})` : "",
        ". They can then be erased, and retention applies to them again.",
      ].join(""),
      `Release hold ${hold.name}`,
    );
    if (!confirmed) return;
    await act(() => api.delete(["holds", hold.id]), () => `Hold ${hold.name} (#${hold.id}) released.`);
  }

  /** Runs a change, then shows its outcome and reloads what it may have changed. */
  async function act(work, success) {
    try {
      const result = await work();
      replace(toolStatus, h("p", { class: "notice", role: "status" }, success(result)));
    } catch (problem) {
      replace(toolStatus, errorBox(problem, { session }));
      return false;
    }
    if (await loadSummary()) await loadPage(pageAfter, null);
    return true;
  }

  // ---- erasure -------------------------------------------------------------------------

  function renderErase() {
    const reason = h("input", { name: "reason", required: true, maxlength: "1000", placeholder: "e.g. GDPR art. 17 request 4711" });
    const form = h(
      "form",
      { class: "erase-form", novalidate: true },
      h(
        "p",
        {},
        "Erasing removes the content, metadata and salt of every message of this session for good (not in search, not in exports). The chain still verifies, an erasure entry records who did it and why, and the session is closed to new entries.",
      ),
      field("Reason for the erasure", reason),
      h("button", { type: "submit", class: "danger" }, "Erase this session…"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!reason.value.trim()) {
        replace(toolStatus, h("p", { class: "error", role: "alert" }, "Give a reason for the erasure: it is kept in the ledger."));
        reason.focus();
        return;
      }
      // The session as it is now, not as the page was loaded: the dialog names what is erased,
      // and entries written after it are not (through_seq).
      let current;
      try {
        current = await api.get(["sessions", session]);
      } catch (problem) {
        replace(toolStatus, errorBox(problem, { session }));
        return;
      }
      const count = current.message_count;
      const confirmed = await confirmDialog(
        `Erase session ${session}?`,
        `This permanently erases the content of all ${plural(count, "message")} in session ${session} (entries 1 to ${current.last_seq}). It cannot be undone. Reason recorded: “${reason.value.trim()}”.`,
        `Erase ${plural(count, "message")}`,
      );
      if (!confirmed) return;
      const done = await act(
        () => api.post(["sessions", session, "erasure"], { reason: reason.value.trim(), through_seq: current.last_seq }),
        (appended) =>
          appended.first_seq === current.last_seq + 1
            ? `Erased. The erasure is recorded as entry ${appended.last_seq}.`
            : `Erased entries 1 to ${current.last_seq}. The erasure is recorded as entry ${appended.last_seq}; entries written after the confirmation were not erased, and the session stays open.`,
      );
      if (done) reason.value = "";
    });
    // A session erased in full is closed: no message is left to erase, none can come.
    replace(eraseBox, summary.closed ? h("p", { class: "notice" }, "This session has been erased in full and is closed to new entries.") : form);
  }

  /** A modal confirmation; resolves true only for the confirm button. */
  function confirmDialog(title, text, confirmLabel) {
    return new Promise((resolve) => {
      const cancel = h("button", { type: "button", value: "cancel" }, "Cancel");
      const ok = h("button", { type: "button", class: "danger", value: "confirm" }, confirmLabel);
      replace(dialog, h("h2", { id: "confirm-title" }, title), h("p", { id: "confirm-text" }, text), h("div", { class: "actions" }, cancel, ok));
      dialog.setAttribute("aria-labelledby", "confirm-title");
      dialog.setAttribute("aria-describedby", "confirm-text");
      const opener = document.activeElement;
      const finish = (answer) => {
        dialog.removeEventListener("close", onClose);
        if (dialog.open) dialog.close();
        if (opener instanceof HTMLElement) opener.focus();
        resolve(answer);
      };
      const onClose = () => finish(false);
      cancel.addEventListener("click", () => finish(false));
      ok.addEventListener("click", () => finish(true));
      dialog.addEventListener("close", onClose);
      dialog.showModal();
      cancel.focus();
    });
  }

  // ---- live tail -----------------------------------------------------------------------

  async function toggleLive() {
    if (live) {
      stopLive("Stopped following.");
      return;
    }
    live = new AbortController();
    replace(liveButton, "Stop following");
    // Follow from the head: show the last page, then append what arrives.
    const last = pageStart(summary.last_seq, PAGE);
    if (pageAfter !== last || !shownSeqs()) await loadPage(last, null);
    renderPager();
    const signal = live.signal;
    const after = shownSeqs()?.[1] ?? summary.last_seq;
    replace(liveStatus, "Connecting to the live tail…");
    follow({
      open: (headers) => api.stream(["sessions", session, "events"], { after_seq: after }, headers, signal),
      signal,
      readProblem,
      onState: (state, problem) => {
        if (signal.aborted) return;
        if (state === "open") {
          replace(liveStatus, h("span", { class: "live-dot" }), "Following live: new entries appear below as they are written.");
          liveStatus.dataset.state = "open";
        } else if (state === "retrying") {
          replace(liveStatus, `Connection lost; reconnecting… (${describeProblem(problem)})`);
          liveStatus.dataset.state = "retrying";
        } else if (problem.status === 401) {
          // A key revoked while following: back to sign-in, as for any other request.
          stopLive();
          errorBox(problem, { session });
        } else {
          const text =
            problem.status === 404 && problem.code === "not_found"
              ? "This server has no live tail (it answered 404)."
              : describeProblem(problem, { session });
          stopLive(text);
          liveStatus.dataset.state = "unavailable";
        }
      },
      onEntry: (entry) => {
        if (signal.aborted) return;
        if (transcript.querySelector(`[data-seq="${entry.seq}"]`)) return;
        const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 200;
        transcript.append(entryItem(entry));
        while (transcript.children.length > LIVE_KEEP) transcript.firstElementChild.remove();
        summary.last_seq = Math.max(summary.last_seq, entry.seq);
        renderRange();
        announce(`New entry ${entry.seq}${entry.role ? ` from ${entry.role}` : ""}.`);
        if (nearBottom) transcript.lastElementChild.scrollIntoView({ block: "end" });
      },
    });
  }

  function stopLive(message) {
    if (live) live.abort();
    live = null;
    replace(liveButton, "Follow live");
    replace(liveStatus, message || "");
    delete liveStatus.dataset.state;
    if (summary) renderPager();
  }

  return {
    element,
    teardown: () => {
      controller.abort();
      if (live) live.abort();
      if (dialog.open) dialog.close();
    },
  };
}
