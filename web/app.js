// Switchboard web chat: the page's state and rendering, on top of the JavaScript client.
//
// The server tells the page where the gateways are (/config.json); a development server also
// mints tokens (POST /dev/token). ?gw=N picks the first gateway and each reconnect goes to the
// next one in the list; without it the client tries the gateways in an order of its own,
// drawn at random.
//
// With history on the server (SWITCHBOARD_HISTORY=on) the page loads the conversation list
// (unread counts, last messages) after login and a conversation's history when it opens
// (older pages as the list scrolls to its top), marks the open, visible conversation read, and
// shows "Seen" under the last own message a peer read. A server without history answers
// `history_off`: the page then keeps the conversations of this browser, as before.
import { SwitchboardClient } from "/client/switchboard.js";

const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (document.querySelector(selector));
const PRESENCE_INTERVAL_MS = 10_000;
const TYPING_EVERY_MS = 2_000; // a "typing" ping at most this often while the user types
const TYPING_SHOWN_MS = 4_000; // "typing…" stays this long after the last ping
const HISTORY_PAGE = 50;
const READ_DELAY_MS = 300; // messages arriving together are marked read with one frame
const STATE_TEXT = {
  idle: "Signed out",
  connecting: "Connecting…",
  ready: "Online",
  reconnecting: "Reconnecting…",
  closed: "Disconnected",
};

/**
 * @typedef {{clientId?: string, mid?: string, seq?: number, from: string, text: string, ts: number,
 *   direction: "in" | "out", state: "received" | "sending" | "sent" | "failed", error?: string,
 *   system?: boolean, element?: HTMLElement}} Entry
 * @typedef {{key: string, kind: "user" | "group" | "room" | "broadcast", id: string,
 *   entries: Entry[], unread: number, online: boolean | null, element?: HTMLElement,
 *   typing: Map<string, any>, last?: {text: string, seq: number}, read?: string | null,
 *   seen?: string, loaded?: boolean, more?: boolean, loading?: boolean, counted?: number}}
 *   Conversation
 *   typing: uid -> the timer that stops showing it; last: its last message (from the server's
 *   list); read: the mid up to which this uid read it; seen: the mid up to which the peer read
 *   it (from receipts); loaded: its newest page of history is on screen; more: older remain;
 *   counted: the seq up to which the server's unread count covers it.
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
  /** @type {boolean | null} whether the server keeps history (null: not known yet) */
  history: null,
  /** @type {any} the pending `read` of the open conversation */
  readTimer: null,
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
  renderMessages(chosen, false);
  renderTyping();
  $("#chat").classList.add("showing-conversation");
  renderConversationList();
  /** @type {HTMLInputElement} */ ($("#text")).focus();
  if (!chosen.loaded) loadHistory(chosen);
  markRead(chosen);
}

/** @param {Conversation} c */
function title(c) {
  return c.kind === "user" ? c.id : c.kind === "broadcast" ? "Everyone" : `${c.kind === "group" ? "Group" : "Room"} ${c.id}`;
}

function renderConversationList() {
  // The most recently active first (the server's seq order); the rest as they were added.
  const ordered = [...page.conversations.values()].sort((a, b) => (b.last?.seq ?? 0) - (a.last?.seq ?? 0));
  const items = ordered.map((c) => {
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
    const last = document.createElement("span");
    last.className = "last";
    last.textContent = c.last?.text ?? "";
    item.append(dot, name, unread, last);
    item.addEventListener("click", () => openConversation(c.key));
    return item;
  });
  $("#conversations").replaceChildren(...items);
}

// Messages

/** @param {Conversation} target @param {Entry} entry */
function addEntry(target, entry) {
  target.entries.push(entry);
  // The list's preview and order: the newest entry (one without seq yet, being sent, is newest).
  if (!entry.system && (entry.seq === undefined || entry.seq >= (target.last?.seq ?? 0))) {
    target.last = { text: entry.text, seq: entry.seq ?? latestSeq() + 0.5 };
  }
  if (target.key === page.openKey) {
    const list = $("#messages");
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(renderEntry(entry));
    if (atBottom || entry.direction === "out") list.scrollTop = list.scrollHeight;
    renderSeen(target);
    if (entry.direction === "in") markRead(target);
    renderConversationList();
  } else if (entry.direction === "in" && !entry.system && !(entry.seq !== undefined && entry.seq <= (target.counted ?? 0))) {
    target.unread += 1;
    renderConversationList();
  } else {
    renderConversationList();
  }
}

/** The highest seq the page knows of (orders conversations whose last entry has none yet). */
function latestSeq() {
  let latest = 0;
  for (const c of page.conversations.values()) latest = Math.max(latest, c.last?.seq ?? 0);
  return latest;
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
    seq: message.seq,
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

// History, read markers and "Seen" (with history on the server)

/** @param {any} message @returns {Entry} */
function entryOf(message) {
  const mine = message.from === page.uid;
  return {
    mid: message.mid,
    seq: message.seq,
    from: message.from,
    text: textOf(message.body),
    ts: message.ts,
    direction: mine ? "out" : "in",
    state: mine ? "sent" : "received",
  };
}

/** @param {Conversation} c */
function addressOf(c) {
  return c.kind === "user" ? { with: c.id } : { group: c.id };
}

/** The server's conversation list: unread counts, last messages, this uid's read markers. */
async function loadConversations() {
  const client = page.client;
  if (!client) return;
  let items;
  try {
    items = await client.conversations({ limit: 100 });
  } catch (error) {
    if (/** @type {any} */ (error).code === "history_off") page.history = false;
    return;
  }
  page.history = true;
  for (const item of items) {
    const c = item.with !== undefined ? conversation("user", item.with) : conversation("group", item.group);
    c.last = { text: textOf(item.last.body), seq: item.last.seq ?? 0 };
    c.read = item.read;
    c.counted = c.last.seq;
    if (c.key !== page.openKey) c.unread = item.unread;
    if (!page.mids.has(item.last.mid) && c.loaded) c.loaded = false; // reload it when opened
  }
  loadSeen();
  renderConversationList();
  const open = page.openKey ? page.conversations.get(page.openKey) : undefined;
  if (open && !open.loaded) loadHistory(open);
}

/** The newest page of a conversation's history, or the page before what is on screen.
 * @param {Conversation} c @param {boolean} [older] */
async function loadHistory(c, older = false) {
  const client = page.client;
  if (!client || page.history !== true || c.loading) return;
  if (c.kind !== "user" && c.kind !== "group") return;
  const onScreen = c.entries.map((e) => e.seq).filter((seq) => typeof seq === "number");
  const before = older && onScreen.length > 0 ? Math.min(.../** @type {number[]} */ (onScreen)) : undefined;
  if (older && before === undefined) return;
  c.loading = true;
  let result;
  try {
    result = await client.history({ ...addressOf(c), before, limit: HISTORY_PAGE });
  } catch {
    return; // shown as it is; the next open tries again
  } finally {
    c.loading = false;
  }
  if (!older) c.loaded = true;
  c.more = result.more;
  const fresh = result.messages.filter((m) => !page.mids.has(m.mid));
  for (const m of fresh) page.mids.add(m.mid);
  // Entries sort by mid, which sorts in send order; those still being sent (no mid) stay last.
  c.entries = [...c.entries, ...fresh.map(entryOf)].sort((a, b) => {
    if (!a.mid || !b.mid) return a.mid ? -1 : b.mid ? 1 : 0;
    return a.mid < b.mid ? -1 : a.mid > b.mid ? 1 : 0;
  });
  if (c.key === page.openKey) renderMessages(c, older);
  markRead(c);
}

/** @param {Conversation} c @param {boolean} keepPosition: older entries came in above */
function renderMessages(c, keepPosition) {
  const list = $("#messages");
  const fromBottom = list.scrollHeight - list.scrollTop;
  const older = document.createElement("li");
  older.className = "older";
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Older messages";
  button.addEventListener("click", () => loadHistory(c, true));
  older.append(button);
  older.hidden = !c.more;
  list.replaceChildren(older, ...c.entries.map(renderEntry));
  list.scrollTop = keepPosition ? list.scrollHeight - fromBottom : list.scrollHeight;
  renderSeen(c);
}

/** Mark the open conversation read up to its last message from others, if the page is seen;
 * a burst of messages takes one `read` (each costs a frame against the rate limits).
 * @param {Conversation} c */
function markRead(c) {
  // The open conversation when the timer fires is the one marked.
  if (page.history !== true || c.key !== page.openKey || page.readTimer !== null) return;
  page.readTimer = setTimeout(() => {
    page.readTimer = null;
    const client = page.client;
    const open = page.openKey ? page.conversations.get(page.openKey) : undefined;
    if (!client || !open || document.visibilityState !== "visible") return;
    if (open.kind !== "user" && open.kind !== "group") return;
    readUpToLast(client, open);
  }, READ_DELAY_MS);
}

/** @param {SwitchboardClient} client @param {Conversation} c */
function readUpToLast(client, c) {
  const last = [...c.entries].reverse().find((e) => e.direction === "in" && !e.system && e.mid);
  if (!last?.mid || (c.read && c.read >= last.mid)) return;
  c.read = last.mid;
  client.read(last.mid).catch(() => {
    c.read = null; // tried again at the next message or open
  });
}

/** A receipt: a peer read up to one of this uid's messages, or another device of it read.
 * @param {{by: string, mid: string}} receipt */
function onReceipt(receipt) {
  // The conversation that shows the mid; not loaded yet: the 1:1 conversation with the reader.
  const c =
    [...page.conversations.values()].find((x) => x.entries.some((e) => e.mid === receipt.mid)) ??
    (receipt.by !== page.uid ? page.conversations.get(`user:${receipt.by}`) : undefined);
  if (!c) return;
  if (receipt.by === page.uid) {
    // Read on another device: what came before the marker is read here too.
    if (!c.read || receipt.mid > c.read) c.read = receipt.mid;
    c.unread = c.entries.filter((e) => e.direction === "in" && !e.system && e.mid && e.mid > receipt.mid).length;
    renderConversationList();
    return;
  }
  if (c.seen && c.seen >= receipt.mid) return;
  c.seen = receipt.mid;
  saveSeen();
  renderSeen(c);
}

/** "Seen" under the last own message at or before the peer's marker. @param {Conversation} c */
function renderSeen(c) {
  if (c.key !== page.openKey) return;
  for (const old of $("#messages").querySelectorAll(".seen")) old.remove();
  if (!c.seen) return;
  const seen = /** @type {string} */ (c.seen);
  const entry = [...c.entries].reverse().find((e) => e.direction === "out" && e.mid && e.mid <= seen);
  if (!entry?.element) return;
  const mark = document.createElement("span");
  mark.className = "seen";
  mark.textContent = "Seen";
  entry.element.append(mark);
}

// The peer's marker is known from receipts only (the conversation list has this uid's own):
// the page keeps the last one per conversation in this browser, for reloads.
function saveSeen() {
  const seen = Object.fromEntries([...page.conversations.values()].filter((c) => c.seen).map((c) => [c.key, c.seen]));
  localStorage.setItem(`switchboard.seen.${page.uid}`, JSON.stringify(seen));
}

function loadSeen() {
  try {
    const seen = JSON.parse(localStorage.getItem(`switchboard.seen.${page.uid}`) ?? "{}");
    for (const [key, mid] of Object.entries(seen)) {
      const c = page.conversations.get(key);
      if (c && typeof mid === "string" && !(c.seen && c.seen >= mid)) c.seen = mid;
    }
  } catch {
    // nothing kept
  }
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
  loadSeen();
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
  // ?gw=N: that gateway first, then the list in its order; otherwise the client's own random
  // order, so that the pages of a gateway that goes away spread over the others.
  const picked = Number.isInteger(wanted) && wanted >= 0 && new URLSearchParams(location.search).has("gw");
  const client = new SwitchboardClient(
    picked
      ? { urls: gateways, token, shuffleUrls: false, startIndex: wanted % gateways.length }
      : { urls: gateways, token },
  );
  page.client = client;
  // @ts-ignore: for debugging in the console
  window.switchboard = client;
  client.on("state", showState);
  client.on("message", onMessage);
  client.on("ready", () => {
    refreshPresence();
    if (page.history !== false) loadConversations();
  });
  client.on("receipt", onReceipt);
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
  // Until now a click would submit the form to the server and reload the page.
  /** @type {HTMLButtonElement} */ ($("#login-form button[type=submit]")).disabled = false;
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
  $("#messages").addEventListener("scroll", () => {
    const open = page.openKey ? page.conversations.get(page.openKey) : undefined;
    if (open?.more && $("#messages").scrollTop === 0) loadHistory(open, true);
  });
  document.addEventListener("visibilitychange", () => {
    const open = page.openKey ? page.conversations.get(page.openKey) : undefined;
    if (open) markRead(open);
  });

  const remembered = sessionStorage.getItem("switchboard.uid");
  if (remembered && page.config.devTokens) logIn(remembered, "");
}

main();
