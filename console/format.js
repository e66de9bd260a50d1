// Pure functions of the console: no DOM, no network, so that node's test runner checks them.

/** Splits a search snippet into runs of text; the server wraps each match in `[[` and `]]`. */
export function parseSnippet(snippet) {
  const runs = [];
  let at = 0;
  while (at < snippet.length) {
    const open = snippet.indexOf("[[", at);
    const close = open < 0 ? -1 : snippet.indexOf("]]", open + 2);
    if (open < 0 || close < 0) {
      runs.push({ text: snippet.slice(at), match: false });
      break;
    }
    if (open > at) runs.push({ text: snippet.slice(at, open), match: false });
    runs.push({ text: snippet.slice(open + 2, close), match: true });
    at = close + 2;
  }
  return runs.filter((run) => run.text !== "");
}

/** The first 12 hex digits of a hash, enough to tell entries apart by eye. */
export function shortHash(hash) {
  return typeof hash === "string" ? hash.slice(0, 12) : "";
}

const REASONS = {
  payload_digest_mismatch:
    "its content or metadata is not what was written: the payload no longer matches its digest",
  prev_hash_mismatch:
    "it does not link to the entry before it: entries were removed, reordered or replaced",
  hash_mismatch:
    "its header (kind, role, time, author or seq) was changed after it was written",
  seq_gap: "an entry is missing: the sequence numbers jump here",
  head_mismatch:
    "the session's recorded head does not match its chain: entries were added or removed at the end",
};

/** A verify answer in plain words: `{ok, headline, detail}`. */
export function describeVerify(result) {
  if (result.ok) {
    const through = result.verified_through_seq;
    const erased = result.erased_entries || 0;
    const erasedNote =
      erased > 0
        ? ` ${erased} erased ${erased === 1 ? "entry verifies" : "entries verify"} by the digest kept for ${erased === 1 ? "it" : "them"}.`
        : "";
    return {
      ok: true,
      headline: through === 0 ? "Intact: the session has no entries yet." : `Intact through seq ${through}.`,
      detail:
        through === 0
          ? ""
          : `Every entry from seq 1 to seq ${through} is unaltered and the chain reaches the recorded head ${shortHash(result.head_hash)}.${erasedNote}`,
    };
  }
  const seq = result.first_bad_seq;
  const why = REASONS[result.reason] || `the check failed (${result.reason})`;
  return {
    ok: false,
    headline: `Tampered: the first bad entry is seq ${seq}.`,
    detail: `Entry ${seq} fails verification because ${why}.${seq > 1 ? ` Entries 1 to ${seq - 1} verify.` : ""} (reason: ${result.reason})`,
  };
}

/** Message content as text: a string, or the text of its content blocks; other blocks as JSON. */
export function contentParts(content) {
  if (content === null || content === undefined) return [];
  if (typeof content === "string") return [{ text: content, json: false }];
  if (!Array.isArray(content)) return [{ text: JSON.stringify(content, null, 2), json: true }];
  return content.map((block) => {
    if (typeof block === "string") return { text: block, json: false };
    if (block && typeof block === "object" && block.type === "text" && typeof block.text === "string") {
      return { text: block.text, json: false };
    }
    return { text: JSON.stringify(block, null, 2), json: true };
  });
}

/** A problem document (or a network failure) as one sentence for the officer. */
export function describeProblem(problem, context = {}) {
  const status = problem.status;
  if (problem.code === "export_incomplete") {
    return "The export stopped before its end, so nothing was saved (the session may have been erased while it was read, or the connection broke). Download it again.";
  }
  if (status === 0) return "The server cannot be reached. Check that chatledger is running, then try again.";
  if (status === 401) return "This key is not accepted: it is wrong, or it has been revoked.";
  if (status === 403) return "This key may not do that: the console needs an auditor key.";
  if (problem.code === "session_not_found") {
    return context.session
      ? `There is no session “${context.session}” in this key's tenant.`
      : "There is no such session in this key's tenant.";
  }
  if (problem.code === "legal_hold") {
    const holds = (problem.holds || []).map((id) => `#${id}`).join(", ");
    return `Refused: the session is under legal hold ${holds}. Release the hold before erasing.`;
  }
  if (status === 503) {
    const wait = problem.retryAfter ? ` Try again in ${problem.retryAfter} s.` : " Try again shortly.";
    return `The database is unavailable, so nothing could be read or changed.${wait}`;
  }
  if (status === 429) return `The server is busy: ${problem.detail || "too many requests"}. Try again shortly.`;
  const detail = problem.detail ? `: ${problem.detail}` : "";
  return `${problem.title || "Request failed"}${detail} (${status}${problem.code ? ` ${problem.code}` : ""})`;
}

/** Replicas behind by less than this are not worth a warning. */
const LAG_WORTH_SAYING_MS = 1000;

/** A warning for an answer read from a replica that may be behind (`null` when it is not). */
export function describeLag(lagMs) {
  if (lagMs === null || lagMs === undefined || lagMs < LAG_WORTH_SAYING_MS) return null;
  const behind = lagMs >= Number.MAX_SAFE_INTEGER ? "an unknown time" : `up to ${Math.ceil(lagMs / 1000).toLocaleString("en")} s`;
  return `Read from a replica that may be ${behind} behind the primary: what was written in that time (new entries, erasures, access records) may not show here yet.`;
}

/** A timestamp for people: date and time to the second, in UTC, as the ledger keeps them. */
export function formatTime(timestamp) {
  if (typeof timestamp !== "string") return "";
  return timestamp.replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
}

/** A `datetime-local` value (the officer's local time) as RFC 3339 UTC, or "" when empty. */
export function localToRfc3339(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

/** The first seq of the page of `size` entries holding `seq` (pages start after multiples of size). */
export function pageStart(seq, size) {
  return Math.max(0, Math.floor((Math.max(seq, 1) - 1) / size) * size);
}

/** A count with its noun. */
export function plural(count, one, many = `${one}s`) {
  return `${count.toLocaleString("en")} ${count === 1 ? one : many}`;
}
