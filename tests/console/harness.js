// The world of the browser tests: a fresh database in DATABASE_URL's cluster, the real
// chatledger binary serving it on a loopback port, data seeded through the API, tampering
// through psql as the superuser, and headless Chromium driven by playwright-core.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "../..");
export const chromiumPath = process.env.CHATLEDGER_CHROMIUM || "/usr/bin/chromium";
export const screenshotDir = join(repo, "docs", "console");

/** The launch flags this machine needs (as root, no GPU, no network beyond loopback). */
export const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

export function binary() {
  return process.env.CHATLEDGER_BIN || join(repo, "target", "debug", "chatledger");
}

function withDatabase(url, name) {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

function psql(url, ...commands) {
  const args = [url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"];
  for (const command of commands) args.push("-c", command);
  const result = spawnSync("psql", args, { encoding: "utf8", cwd: "/" });
  if (result.status !== 0) throw new Error(`psql failed: ${result.stderr}`);
  return result.stdout.trim();
}

/** Everything a test needs; `World.start()` builds it, `stop()` removes it. */
export class World {
  static async start() {
    const owner = process.env.DATABASE_URL;
    const superuser = process.env.CHATLEDGER_TEST_SUPERUSER_URL;
    if (!owner || !superuser) {
      throw new Error("DATABASE_URL and CHATLEDGER_TEST_SUPERUSER_URL must be set (scripts/test.sh sets them)");
    }
    const world = new World();
    world.name = `chatledger_console_${randomBytes(6).toString("hex")}`;
    world.ownerUrl = owner;
    psql(owner, `CREATE DATABASE ${world.name}`);
    world.databaseUrl = withDatabase(owner, world.name);
    world.superuserUrl = withDatabase(superuser, world.name);
    world.dir = mkdtempSync(join(tmpdir(), "chatledger-console-"));
    world.adminKey = `console-admin-${randomBytes(24).toString("hex")}`;
    const keyFile = join(world.dir, "admin.key");
    writeFileSync(keyFile, world.adminKey, { mode: 0o600 });
    // With an external database the server signs checkpoints only with a key it is given.
    world.checkpointKeyFile = join(world.dir, "checkpoint.key");
    const generated = spawnSync(binary(), ["checkpoint-key", "--generate", world.checkpointKeyFile,
      "--name", "chatledger/console-tests"], { encoding: "utf8" });
    if (generated.status !== 0) throw new Error(`checkpoint-key failed: ${generated.stderr}`);
    await world.startServer(keyFile);
    Object.assign(world, await world.tenantWithKeys());
    return world;
  }

  /** A fresh tenant with one key per role: `{tenant, keys, keyIds}`. */
  async tenantWithKeys() {
    const tenant = `console-${randomBytes(4).toString("hex")}`;
    await this.admin("POST", "/v1/admin/tenants", { name: tenant });
    const keys = {};
    const keyIds = {};
    for (const role of ["writer", "reader", "auditor"]) {
      const created = await this.admin("POST", "/v1/admin/keys", { tenant, role, label: `console-${role}` });
      keys[role] = created.key;
      keyIds[role] = created.id;
    }
    return { tenant, keys, keyIds };
  }

  async startServer(keyFile) {
    const env = { ...process.env };
    delete env.DATABASE_URL;
    for (const name of Object.keys(env)) if (name.startsWith("CHATLEDGER_")) delete env[name];
    this.logs = [];
    this.server = spawn(
      binary(),
      ["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--database-url", this.databaseUrl,
        "--admin-key-file", keyFile, "--checkpoint-key-file", this.checkpointKeyFile,
        "--acquire-timeout-ms", "1000"],
      { env, stdio: ["ignore", "ignore", "pipe"] },
    );
    const lines = createInterface({ input: this.server.stderr });
    this.url = await new Promise((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not start:\n${this.logs.slice(-30).join("\n")}`)), 120000);
      this.server.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited (${code}):\n${this.logs.slice(-30).join("\n")}`));
      });
      lines.on("line", (line) => {
        this.logs.push(line);
        if (this.logs.length > 2000) this.logs.shift();
        try {
          const fields = JSON.parse(line).fields || {};
          if (fields.message === "chatledger listening") {
            clearTimeout(timer);
            resolveUrl(`http://${fields.address}`);
          }
        } catch {
          // Not a JSON line.
        }
      });
    });
  }

  async request(method, path, key, body, extraHeaders = {}) {
    const headers = { Authorization: `Bearer ${key}`, ...extraHeaders };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(`${this.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    const json = text && response.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
    return { status: response.status, headers: response.headers, body: json };
  }

  /** The status of a GET, without reading its body (a stream may never end). */
  async probe(path, key) {
    const controller = new AbortController();
    const response = await fetch(`${this.url}${path}`, { headers: { Authorization: `Bearer ${key}` }, signal: controller.signal });
    controller.abort();
    return response.status;
  }

  async expect(method, path, key, body, status) {
    const answer = await this.request(method, path, key, body);
    if (answer.status !== status) {
      throw new Error(`${method} ${path}: ${answer.status} ${JSON.stringify(answer.body)} (expected ${status})`);
    }
    return answer.body;
  }

  admin(method, path, body) {
    return this.expect(method, path, this.adminKey, body, 201);
  }

  /** Appends `messages` (objects, or [role, content] pairs) as the writer, 100 at a time. */
  async append(session, messages, writer = this.keys.writer) {
    const batch = messages.map((m) => (Array.isArray(m) ? { role: m[0], content: m[1] } : m));
    let last = null;
    for (let at = 0; at < batch.length; at += 100) {
      last = await this.expect("POST", `/v1/sessions/${session}/messages`, writer, { messages: batch.slice(at, at + 100) }, 201);
    }
    return last;
  }

  reset(session) {
    return this.expect("POST", `/v1/sessions/${session}/reset`, this.keys.writer, {}, 201);
  }

  async entries(session) {
    const all = [];
    let after = 0;
    while (after !== null) {
      const page = await this.expect("GET", `/v1/sessions/${session}/messages?after_seq=${after}&limit=1000`, this.keys.auditor, undefined, 200);
      all.push(...page.entries);
      after = page.next_after_seq;
    }
    return all;
  }

  /** Runs SQL as the superuser with triggers off: the strongest attacker there is. */
  tamper(sql) {
    return psql(this.superuserUrl, "SET session_replication_role = replica", sql);
  }

  /** The SQL naming one session's row. */
  sessionRow(session) {
    return `(SELECT s.id FROM sessions s JOIN tenants t ON t.id = s.tenant_id WHERE t.name = '${this.tenant}' AND s.session_id = '${session}')`;
  }

  /**
   * Takes the database away from the server (a real outage: its connections are cut and new
   * ones refused with "too many connections"), and gives it back.
   */
  databaseDown() {
    psql(this.superuserUrl.replace(`/${this.name}`, "/postgres"),
      `ALTER DATABASE ${this.name} CONNECTION LIMIT 0`,
      `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '${this.name}' AND pid <> pg_backend_pid()`);
  }

  databaseUp() {
    psql(this.superuserUrl.replace(`/${this.name}`, "/postgres"), `ALTER DATABASE ${this.name} CONNECTION LIMIT -1`);
  }

  async stop() {
    if (this.server && this.server.exitCode === null) {
      const exited = new Promise((done) => this.server.once("exit", done));
      this.server.kill("SIGTERM");
      await Promise.race([exited, new Promise((done) => setTimeout(done, 15000))]);
      if (this.server.exitCode === null) this.server.kill("SIGKILL");
    }
    if (this.name) {
      try {
        this.databaseUp();
        psql(this.ownerUrl, `DROP DATABASE IF EXISTS ${this.name} WITH (FORCE)`);
      } catch {
        // Best effort: the cluster is throwaway.
      }
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Why the browser tests cannot run here, or null. */
export function missingPrerequisite() {
  if (!existsSync(chromiumPath)) return `no Chromium at ${chromiumPath} (apt-get install chromium)`;
  if (!existsSync(join(here, "node_modules", "playwright-core"))) return "playwright-core is not installed (npm ci in tests/console)";
  if (!existsSync(binary())) return `no chatledger binary at ${binary()} (cargo build)`;
  return null;
}

/** Headless Chromium with a fresh profile; `close()` removes the profile too. */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "chatledger-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: chromiumArgs,
    viewport: { width: 1280, height: 800 },
    acceptDownloads: true,
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
