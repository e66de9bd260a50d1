// Server-sent events over fetch (EventSource cannot send an Authorization header): a parser
// that follows the HTML standard's rules, and a follower that reconnects with Last-Event-ID.

/** Feeds text in any chunks; `push` returns the events completed so far. */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.id = null;
    this.lastEventId = null;
  }

  push(chunk) {
    this.buffer += chunk;
    const events = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      // A lone "\r" at the end may be half of "\r\n": wait for more.
      if (!match || (match[0] === "\r" && match.index === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") {
      if (this.id !== null) this.lastEventId = this.id;
      const event =
        this.data.length > 0
          ? { id: this.lastEventId, event: this.event || "message", data: this.data.join("\n") }
          : null;
      this.data = [];
      this.event = "";
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    return null;
  }
}

/**
 * Follows `url` until `signal` aborts: `open(headers)` returns a fetch Response; each entry
 * goes to `onEntry`, state changes ("open", "retrying", "unavailable") to `onState` with the
 * problem or error. Reconnects after a drop, continuing from the last id seen.
 */
export async function follow({ open, signal, onEntry, onState, readProblem }) {
  let lastId = null;
  let delay = 500;
  while (!signal.aborted) {
    let response;
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      response = await open(headers);
    } catch (error) {
      if (signal.aborted) return;
      onState("retrying", { status: 0 });
      await pause(delay, signal);
      delay = Math.min(delay * 2, 10000);
      continue;
    }
    if (!response.ok) {
      const problem = await readProblem(response);
      // Our 404 for the route itself, 401, 403: retrying cannot help.
      if ([400, 401, 403, 404].includes(response.status)) {
        onState("unavailable", problem);
        return;
      }
      onState("retrying", problem);
      await pause(delay, signal);
      delay = Math.min(delay * 2, 10000);
      continue;
    }
    onState("open", null);
    delay = 500;
    const parser = new SseParser();
    if (lastId !== null) parser.lastEventId = lastId;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.push(value)) {
          if (event.id !== null) lastId = event.id;
          if (event.event !== "entry") continue;
          let entry;
          try {
            entry = JSON.parse(event.data);
          } catch {
            continue;
          }
          onEntry(entry);
        }
      }
    } catch {
      // A dropped connection: reconnect below.
    }
    if (signal.aborted) return;
    onState("retrying", { status: 0 });
    await pause(delay, signal);
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
