// Switchboard web chat: the page's state and rendering, on top of the JavaScript client.
//
// The server tells the page where the gateways are (/config.json); a development server also
// mints tokens (POST /dev/token). ?gw=N picks the first gateway (default: a random one); each
// reconnect goes to the next one.
import { SwitchboardClient } from "/client/switchboard.js";

const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (document.querySelector(selector));
const PRESENCE_INTERVAL_MS = 10_000;
const TYPING_EVERY_MS = 2_000; // a "typing" ping at most this often while the user types
const TYPING_SHOWN_MS = 4_000; // "typing…" stays this long after the last ping
const STATE_TEXT = {
  idle: "Signed out",
  connecting: "Connecting…",
  ready: "Online",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

/**
 * @typedef {{clientId?: string, mid?: string, from: string, text: string, ts: number,
 *   direction: "in" | "out", state: "received" | "sending" | "sent" | "failed", error?: string,
 *   system?: boolean, element?: HTMLElement}} Entry
 * @typedef {{key: string, kind: "user" | "group" | "room" | "broadcast", id: string,
 *   entries: Entry[], unread: number, online: boolean | null, element?: HTMLElement,
 *   typing: Map<string, any>}} Conversation  typing: uid -> the timer that stops showing it
 */

const page = {
  /** @type {{gateways: string[], devTokens: boolean}} */
  config: { gateways: [], devTokens: false },
  /** @type {SwitchboardClient | null} */
  client: null,
  uid: "",
  /** @type {Map<string, Conversation>} */
  conversations: new Map(),
  /** @type {string | null} */
  openKey: null,
  /** @type {Set<string>} mids on screen: the client drops duplicates, this is a second guard */
  mids: new Set(),
  /** @type {any} */
  presenceTimer: null,
  /** when this page last told the open conversation that its user types */
  typingSentAt: 0,
};

// Conversations

/** @param {"user" | "group" | "room" | "broadcast"} kind @param {string} id */
function conversation(kind, id) {
  const key = `${kind}:${id}`;
  let found = page.conversations.get(key);
  if (!found) {
    found = { key, kind, id, entries: [], unread: 0, online: kind === "user" ? null : false, typing: new Map() };
    page.conversations.set(key, found);
    renderConversationList();
    saveContacts();
  }
  return found;
}

function saveContacts() {
  const keys = [...page.conversations.keys()];
  localStorage.setItem(`switchboard.contacts.${page.uid}`, JSON.stringify(keys));
}

function loadContacts() {
  let keys = [];
  try {
    keys = JSON.parse(localStorage.getItem(`switchboard.contacts.${page.uid}`) ?? "[]");
  } catch {
    keys = [];
  }
  for (const key of keys) {
    const [kind, ...rest] = String(key).split(":");
    if (["user", "group", "room", "broadcast"].includes(kind) && rest.length) {
      conversation(/** @type {any} */ (kind), rest.join(":"));
    }
  }
}

/** @param {any} message */
function conversationOf(message) {
  if (message.group !== undefined) return conversation("group", message.group);
  if (message.room !== undefined) return conversation("room", message.room);
  if (message.broadcast) return conversation("broadcast", "everyone");
  return conversation("user", message.from === page.uid ? message.to : message.from);
}

/** @param {string} key */
function openConversation(key) {
  const chosen = page.conversations.get(key);
  if (!chosen) return;
  page.openKey = key;
  chosen.unread = 0;
  $("#conversation-title").textContent = title(chosen);
  $("#composer").hidden = chosen.kind === "broadcast";
  const list = $("#messages");
  list.replaceChildren(...chosen.entries.map(renderEntry));
  list.scrollTop = list.scrollHeight;
  renderTyping();
  $("#chat").classList.add("showing-conversation");
  renderConversationList();
  /** @type {HTMLInputElement} */ ($("#text")).focus();
}

/** @param {Conversation} c */
function title(c) {
  return c.kind === "user" ? c.id : c.kind === "broadcast" ? "Everyone" : `${c.kind === "group" ? "Group" : "Room"} ${c.id}`;
}

function renderConversationList() {
  const items = [...page.conversations.values()].map((c) => {
    const item = document.createElement("li");
    item.className = "conversation-item";
    item.dataset.key = c.key;
    item.setAttribute("aria-current", String(c.key === page.openKey));
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.dataset.online = c.kind !== "user" ? "false" : c.online === null ? "unknown" : String(c.online);
    dot.title = c.kind !== "user" ? "" : c.online === null ? "presence unknown" : c.online ? "online" : "offline";
    dot.hidden = c.kind !== "user";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = title(c);
    const unread = document.createElement("span");
    unread.className = "unread";
    unread.textContent = c.unread > 0 ? String(c.unread) : "";
    item.append(dot, name, unread);
    item.addEventListener("click", () => openConversation(c.key));
    return item;
  });
  $("#conversations").replaceChildren(...items);
}

// Messages

/** @param {Conversation} target @param {Entry} entry */
function addEntry(target, entry) {
  target.entries.push(entry);
  if (target.key === page.openKey) {
    const list = $("#messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(renderEntry(entry));
    if (atBottom || entry.direction === "out") list.scrollTop = list.scrollHeight;
  } else if (entry.direction === "in" && !entry.system) {
    target.unread += 1;
    renderConversationList();
  }
}

/** @param {Entry} entry */
function renderEntry(entry) {
  const item = document.createElement("li");
  item.className = entry.system ? "message system" : "message";
  item.dataset.direction = entry.direction;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = entry.text;
  item.append(text);
  if (!entry.system) {
    const meta = document.createElement("span");
    meta.className = "meta";
    item.append(meta);
  }
  entry.element = item;
  updateEntry(entry);
  return item;
}

/** @param {Entry} entry */
function updateEntry(entry) {
  const item = entry.element;
  if (!item || entry.system) return;
  item.dataset.state = entry.state;
  if (entry.mid) item.dataset.mid = entry.mid;
  const meta = /** @type {HTMLElement} */ (item.querySelector(".meta"));
  const time = new Date(entry.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const who = entry.direction === "in" ? `${entry.from} · ` : "";
  meta.textContent = `${who}${time}`;
  if (entry.direction === "out") {
    const delivery = document.createElement("span");
    delivery.className = "delivery";
    delivery.textContent = entry.state === "failed" ? ` · failed (${entry.error})` : ` · ${entry.state}`;
    meta.append(delivery);
    if (entry.state === "failed") {
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "retry";
      retry.textContent = "retry";
      retry.addEventListener("click", () => deliver(entry, conversationOfEntry(entry)));
      meta.append(retry);
    }
  }
}

/** @param {Entry} entry */
function conversationOfEntry(entry) {
  for (const c of page.conversations.values()) if (c.entries.includes(entry)) return c;
  throw new Error("entry without conversation");
}

/** @param {unknown} body */
function textOf(body) {
  if (body && typeof body === "object" && "text" in body && typeof body.text === "string") return body.text;
  return JSON.stringify(body);
}

/** @param {unknown} body */
function isTypingPing(body) {
  return body !== null && typeof body === "object" && /** @type {any} */ (body).typing === true;
}

/** @param {any} message */
function onMessage(message) {
  if (message.transient && isTypingPing(message.body)) {
    if (message.from !== page.uid) showTyping(conversationOf(message), message.from);
    return;
  }
  if (page.mids.has(message.mid)) return;
  page.mids.add(message.mid);
  const target = conversationOf(message);
  stopTyping(target, message.from);
  addEntry(target, {
    mid: message.mid,
    from: message.from,
    text: textOf(message.body),
    ts: message.ts,
    direction: message.from === page.uid ? "out" : "in",
    state: message.from === page.uid ? "sent" : "received",
  });
}

/** @param {string} text */
function sendText(text) {
  const target = page.openKey ? page.conversations.get(page.openKey) : undefined;
  if (!target || !page.client) return;
  /** @type {Entry} */
  const entry = { clientId: undefined, from: page.uid, text, ts: Date.now(), direction: "out", state: "sending" };
  addEntry(target, entry);
  deliver(entry, target);
}

/** Send (or retry with the same id: the server delivers it once). @param {Entry} entry @param {Conversation} target */
async function deliver(entry, target) {
  const client = page.client;
  if (!client) return;
  entry.clientId ??= `w${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  entry.state = "sending";
  updateEntry(entry);
  const address = target.kind === "user" ? { to: target.id } : target.kind === "group" ? { group: target.id } : { room: target.id };
  try {
    entry.mid = await client.send({ ...address, body: { text: entry.text }, id: entry.clientId });
    page.mids.add(entry.mid);
    entry.state = "sent";
  } catch (error) {
    entry.state = "failed";
    entry.error = /** @type {any} */ (error).code ?? /** @type {any} */ (error).closeCode ?? "error";
  }
  updateEntry(entry);
}

// Typing: transient sends, never stored and never acknowledged

/** @param {Conversation} target @param {string} uid */
function showTyping(target, uid) {
  clearTimeout(target.typing.get(uid));
  target.typing.set(uid, setTimeout(() => stopTyping(target, uid), TYPING_SHOWN_MS));
  if (target.key === page.openKey) renderTyping();
}

/** @param {Conversation} target @param {string} uid */
function stopTyping(target, uid) {
  if (!target.typing.has(uid)) return;
  clearTimeout(target.typing.get(uid));
  target.typing.delete(uid);
  if (target.key === page.openKey) renderTyping();
}

function renderTyping() {
  const open = page.openKey ? page.conversations.get(page.openKey) : undefined;
  const uids = open ? [...open.typing.keys()].sort() : [];
  const line = $("#typing");
  line.textContent = uids.length === 0 ? "" : `${uids.join(", ")} ${uids.length === 1 ? "is" : "are"} typing…`;
}

/** Tell the open conversation that its user types, at most every TYPING_EVERY_MS. */
function sendTyping() {
  const target = page.openKey ? page.conversations.get(page.openKey) : undefined;
  const client = page.client;
  if (!target || !client || client.state !== "ready") return;
  if (target.kind !== "user" && target.kind !== "group") return;
  if (Date.now() - page.typingSentAt < TYPING_EVERY_MS) return;
  page.typingSentAt = Date.now();
  const address = target.kind === "user" ? { to: target.id } : { group: target.id };
  client.send({ ...address, body: { typing: true }, transient: true }).catch(() => {}); // a lost ping only hides "typing…"
}

/** @param {Conversation} target @param {string} text */
function systemLine(target, text) {
  addEntry(target, { from: "", text, ts: Date.now(), direction: "in", state: "received", system: true });
}

// Presence

async function refreshPresence() {
  const client = page.client;
  const users = [...page.conversations.values()].filter((c) => c.kind === "user");
  if (!client || client.state !== "ready" || users.length === 0) return;
  let online = null;
  try {
    online = new Set(await client.presence(users.map((c) => c.id)));
  } catch {
    online = null; // a server without presence: shown as unknown
  }
  for (const c of users) c.online = online === null ? null : online.has(c.id);
  renderConversationList();
}

// Connection

/** @param {string} state */
function showState(state) {
  const status = $("#status");
  status.dataset.state = state;
  const client = page.client;
  let text = STATE_TEXT[/** @type {keyof typeof STATE_TEXT} */ (state)] ?? state;
  if (state === "ready" && client?.url) {
    const index = page.config.gateways.indexOf(client.url);
    text = `Online · gateway ${index + 1}`;
    status.dataset.gateway = client.url;
  }
  if (state === "closed" && client?.closed && client.closed.closeCode !== 1000) {
    text = client.closed.closeCode === 4005 ? "Signed out: kicked" : `Disconnected (${client.closed.closeCode})`;
  }
  status.textContent = text;
}

/** @param {string} uid @param {string} pastedToken */
async function logIn(uid, pastedToken) {
  page.uid = uid;
  page.conversations.clear();
  page.openKey = null;
  loadContacts();
  const token = pastedToken
    ? () => pastedToken
    : async () => {
        const response = await fetch("/dev/token", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ uid }),
        });
        if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
        return (await response.json()).token;
      };
  const gateways = page.config.gateways;
  const wanted = Number(new URLSearchParams(location.search).get("gw"));
  const startIndex = Number.isInteger(wanted) && wanted >= 0 && new URLSearchParams(location.search).has("gw")
    ? wanted % gateways.length
    : Math.floor(Math.random() * gateways.length);
  const client = new SwitchboardClient({ urls: gateways, token, startIndex });
  page.client = client;
  // @ts-ignore: for debugging in the console
  window.switchboard = client;
  client.on("state", showState);
  client.on("message", onMessage);
  client.on("ready", () => refreshPresence());
  client.on("closed", () => showState("closed"));

  $("#me").textContent = uid;
  $("#login").hidden = true;
  $("#chat").hidden = false;
  $("#logout").hidden = false;
  renderConversationList();
  page.presenceTimer = setInterval(refreshPresence, PRESENCE_INTERVAL_MS);
  try {
    await client.start();
  } catch (error) {
    showState("closed");
    return;
  }
  // Rooms of the saved conversation list are joined again (the client keeps them joined).
  for (const c of page.conversations.values()) {
    if (c.kind === "room") client.join(c.id).catch((error) => systemLine(c, `could not join: ${error.code ?? error}`));
  }
}

async function logOut() {
  clearInterval(page.presenceTimer);
  await page.client?.close();
  page.client = null;
  sessionStorage.removeItem("switchboard.uid");
  location.reload();
}

// Wiring

async function main() {
  page.config = await (await fetch("/config.json")).json();
  $("#token-field").hidden = page.config.devTokens;

  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const uid = /** @type {HTMLInputElement} */ ($("#uid")).value.trim();
    const pasted = /** @type {HTMLTextAreaElement} */ ($("#token")).value.trim();
    if (!uid) return;
    if (!page.config.devTokens && !pasted) {
      $("#login-error").textContent = "This server issues no development tokens: paste a token.";
      return;
    }
    if (page.config.devTokens) sessionStorage.setItem("switchboard.uid", uid);
    logIn(uid, pasted);
  });
  $("#logout").addEventListener("click", () => logOut());
  $("#back").addEventListener("click", () => $("#chat").classList.remove("showing-conversation"));

  $("#new-conversation").addEventListener("submit", async (event) => {
    event.preventDefault();
    const kind = /** @type {"user" | "group" | "room"} */ (/** @type {HTMLSelectElement} */ ($("#new-kind")).value);
    const input = /** @type {HTMLInputElement} */ ($("#new-id"));
    const id = input.value.trim();
    if (!id) return;
    input.value = "";
    const added = conversation(kind, id);
    openConversation(added.key);
    if (kind === "room" && page.client) {
      try {
        await page.client.join(id);
        systemLine(added, `joined room ${id}`);
      } catch (error) {
        systemLine(added, `could not join room ${id}: ${/** @type {any} */ (error).code ?? error}`);
      }
    }
    if (kind === "user") refreshPresence();
  });

  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($("#text"));
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    page.typingSentAt = 0; // the message itself ends "typing…"; the next keystroke says it again
    sendText(text);
  });
  $("#text").addEventListener("input", () => sendTyping());

  const remembered = sessionStorage.getItem("switchboard.uid");
  if (remembered && page.config.devTokens) logIn(remembered, "");
}

main();
