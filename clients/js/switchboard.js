// Switchboard client: one ES module, no build step, no runtime dependencies.
//
// Runs in browsers as it is, and in Node with the `ws` package passed in as `WebSocket`
// (or Node's global WebSocket where there is one). The wire protocol is Switchboard's
// proto/frames.py; the behaviour mirrors the Python client in clients/python.
//
//   import { SwitchboardClient } from "./switchboard.js";
//   const client = new SwitchboardClient({ urls, token: () => fetchToken() });
//   client.on("message", async (message) => { ... });   // acknowledged once this resolves
//   client.on("state", (state) => { ... });              // connecting, ready, reconnecting, closed
//   await client.start();
//   const mid = await client.send({ to: "bob", body: { text: "hi" } });
//   const { messages, more } = await client.history({ with: "bob" }); // with history on

/** Close codes after which the client must not reconnect on its own: invalid token, kicked. */
export const TERMINAL_CLOSE_CODES = new Set([4003, 4005]);
/** The gateway is shutting down cleanly: reconnect at once, to another gateway. */
export const GOING_AWAY = 1001;
/** The most uids one `presence` frame may ask about; `presence()` asks in pieces of this size. */
export const MAX_PRESENCE_UIDS = 100;

/**
 * @typedef {"idle" | "connecting" | "ready" | "reconnecting" | "closed"} ClientState
 *
 * @typedef {object} Message  A received `message` frame; exactly one of to, group, room, broadcast.
 * @property {string} mid     Server id; sorts in send order.
 * @property {string} from    Sender uid.
 * @property {unknown} body   Any JSON value, as the sender sent it.
 * @property {number} ts      Unix milliseconds.
 * @property {string} [to]
 * @property {string} [group]
 * @property {string} [room]
 * @property {boolean} [broadcast]
 * @property {boolean} [transient]  Sent transient: only to connections online then, never stored.
 * @property {number} [seq]   Its place in the uid's inbox, with history on (none for room,
 *                            broadcast and transient messages).
 *
 * @typedef {object} Receipt  `by` read the conversation of `mid` up to it: the peer read one of
 *                            your messages, or another of your devices read one sent to you.
 * @property {string} by
 * @property {string} mid
 * @property {number} [seq]
 *
 * @typedef {object} Conversation  One of the uid's conversations: `with` (1:1) or `group`.
 * @property {string} [with]
 * @property {string} [group]
 * @property {Message & {type?: string}} last  Its last message, with the uid's `seq`.
 * @property {number} unread  Messages from others after the read marker.
 * @property {string | null} read  The mid of the uid's own read marker.
 *
 * @typedef {object} SeqStore  Where the highest `seq` processed is kept between connections.
 * @property {() => number | null | undefined} load
 * @property {(seq: number) => void} save
 *
 * @typedef {object} SendOptions  Exactly one of to, group, room, broadcast.
 * @property {unknown} body
 * @property {string} [to]
 * @property {string} [group]
 * @property {string} [room]
 * @property {boolean} [broadcast]
 * @property {string} [id]    Client id of the frame; a retry with the same id is delivered once.
 * @property {boolean} [transient]  Only to the connections online now, never stored, no ack
 *                                  (typing indicators, "seen" pings, game moves).
 *
 * @typedef {object} ClientOptions
 * @property {string[] | string} urls            Gateway URLs; each reconnect takes the next one, in
 *                                              an order of the client's own (`shuffleUrls`).
 * @property {string | (() => string | Promise<string>)} token  Called before every connection,
 *                                              and before the token expires: the new one
 *                                              replaces it on the open connection (`refresh`).
 * @property {any} [WebSocket]                   A WebSocket class (Node: `ws`); default: the global.
 * @property {boolean} [shuffleUrls]             Try the URLs in an order drawn at random once
 *                                              (default true; `urlOrder`), so that the clients
 *                                              of a gateway that goes away spread over the others
 *                                              rather than all moving to the next one in the list;
 *                                              false: in the order given.
 * @property {number} [startIndex]               Which URL of that order to try first (default 0).
 * @property {number} [pingIntervalMs]           A `ping` goes out this long after the last pong.
 * @property {number} [pongTimeoutMs]            No `pong` this long after a ping: the connection is dead.
 * @property {number} [replyTimeoutMs]           A request unanswered this long is sent again, same id.
 * @property {number} [openTimeoutMs]            Deadline of the first attempt, from opening the
 *                                              socket to `ready`; each attempt after one that
 *                                              failed gets twice the one before
 *                                              (`openDeadlineMs`), up to `openTimeoutMaxMs`.
 * @property {number} [openTimeoutMaxMs]         Cap of every attempt's deadline (default 20 s).
 * @property {number} [refreshBeforeMs]          A new token is asked for this long before `exp`
 *                                              (half the token's remaining life if shorter).
 * @property {number} [backoffBaseMs]            Ceiling of the first jittered reconnect delay.
 * @property {number} [backoffMaxMs]             Cap of every reconnect delay.
 * @property {number} [seenMids]                 How many recent mids are remembered (duplicates).
 * @property {() => number} [random]             A draw in [0, 1), for the jitter and the order.
 * @property {SeqStore | null} [seqStore]        Where the highest `seq` processed is kept (a
 *                                              message's once its listeners resolved, a
 *                                              receipt's once emitted); every `init` sends it as
 *                                              `since`. Default: localStorage in browsers (key
 *                                              `switchboard.seq.<uid>`, the uid from the token),
 *                                              memory elsewhere.
 */

/** A SeqStore in memory: this page or process only. */
export class MemorySeqStore {
  /** @param {number | null} [seq] */
  constructor(seq = null) {
    this.seq = seq;
  }

  load() {
    return this.seq;
  }

  /** @param {number} seq */
  save(seq) {
    this.seq = seq;
  }
}

/** A SeqStore in localStorage (shared by a browser's tabs of the same uid). */
export class LocalStorageSeqStore {
  /** @param {string} key @param {Storage} [storage] */
  constructor(key, storage = globalThis.localStorage) {
    this.key = key;
    this.storage = storage;
  }

  load() {
    const seq = Number(this.storage.getItem(this.key) ?? NaN);
    return Number.isSafeInteger(seq) && seq >= 0 ? seq : null;
  }

  /** @param {number} seq */
  save(seq) {
    // Tabs of one uid share the key; each gets every entry, so one behind another costs only
    // a few entries synced twice (dropped by mid).
    this.storage.setItem(this.key, String(seq));
  }
}

/**
 * The uid (`sub`) of a JWT, read without verifying it; null when it has none.
 * @param {string} token
 * @returns {string | null}
 */
export function tokenSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(payload + "=".repeat((4 - (payload.length % 4)) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return typeof claims?.sub === "string" ? claims.sub : null;
  } catch {
    return null;
  }
}

/**
 * The order in which a client tries its gateway URLs: a permutation drawn once (Fisher-Yates).
 * Each reconnect takes the next URL of this order. Drawn per client, it sends the clients of a
 * gateway that went away to all the others alike: with one order for every client (the list
 * as given), they would all move to the same next gateway at once.
 * @param {string[]} urls
 * @param {() => number} [random]  A draw in [0, 1).
 * @returns {string[]}
 */
export function urlOrder(urls, random = Math.random) {
  const order = [...urls];
  for (let last = order.length - 1; last > 0; last -= 1) {
    const chosen = Math.min(Math.floor(random() * (last + 1)), last);
    [order[last], order[chosen]] = [order[chosen], order[last]];
  }
  return order;
}

/**
 * Deadline of a connection attempt, from opening the socket to `ready`, after `attempt`
 * attempts that ended without `ready` since the last one that reached it (0: the first
 * attempt, or the first after a drop): `baseMs` for the first, twice the one before for each
 * attempt after one that failed, up to `maxMs`. An attempt that runs out of time was most
 * often queued behind other logins (a gateway taking in the clients of one that went away):
 * giving up throws away the work the gateway had begun, and the next attempt joins the back
 * of the same queue.
 * @param {number} attempt
 * @param {number} baseMs
 * @param {number} maxMs
 * @returns {number}
 */
export function openDeadlineMs(attempt, baseMs, maxMs) {
  return Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 32));
}

/**
 * Delay before reconnect number `attempt` (0 is the first after a drop): exponential backoff
 * with full jitter, capped; at once after a going-away close.
 * @param {number} attempt
 * @param {number | null} closeCode
 * @param {number} baseMs
 * @param {number} maxMs
 * @param {() => number} [random]
 * @returns {number}
 */
export function reconnectDelayMs(attempt, closeCode, baseMs, maxMs, random = Math.random) {
  if (closeCode === GOING_AWAY && attempt === 0) return 0;
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 32));
  return ceiling * random();
}

/**
 * The `exp` of a JWT in Unix milliseconds, read without verifying it (the gateway verifies);
 * null when it has none.
 * @param {string} token
 * @returns {number | null}
 */
export function tokenExpiryMs(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(payload + "=".repeat((4 - (payload.length % 4)) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    const exp = claims?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * Delay before refreshing a token that expires at `expiresMs`: `beforeMs` ahead of it, or half
 * of what is left when that is less than twice `beforeMs`.
 * @param {number} expiresMs
 * @param {number} nowMs
 * @param {number} beforeMs
 * @returns {number}
 */
export function refreshDelayMs(expiresMs, nowMs, beforeMs) {
  const remainingMs = expiresMs - nowMs;
  if (remainingMs > 2 * beforeMs) return remainingMs - beforeMs;
  return Math.max(0, remainingMs / 2);
}

/**
 * Delay before trying again after a refresh failed: half of what is left, at least a second.
 * Past `exp`, the gateway closes the connection (4004) and the client reconnects.
 * @param {number} expiresMs
 * @param {number} nowMs
 * @returns {number}
 */
export function refreshRetryDelayMs(expiresMs, nowMs) {
  return Math.max(1000, (expiresMs - nowMs) / 2);
}

/** The most recent mids handed to the application, oldest forgotten first (an LRU). */
export class SeenMids {
  /** @param {number} capacity */
  constructor(capacity) {
    this.capacity = capacity;
    /** @type {Map<string, boolean>} mid -> whether the application finished handling it */
    this.mids = new Map();
  }

  /** @param {string} mid */
  has(mid) {
    return this.mids.has(mid);
  }

  /** @param {string} mid */
  add(mid) {
    this.mids.delete(mid);
    this.mids.set(mid, false);
    while (this.mids.size > this.capacity) {
      this.mids.delete(this.mids.keys().next().value);
    }
  }

  /** @param {string} mid */
  markHandled(mid) {
    if (this.mids.has(mid)) this.mids.set(mid, true);
  }

  /** @param {string} mid */
  isHandled(mid) {
    return this.mids.get(mid) === true;
  }

  /** @param {string} mid */
  forget(mid) {
    this.mids.delete(mid);
  }

  get size() {
    return this.mids.size;
  }
}

/** The gateway answered a request with an `error` frame; `code` is its error code. */
export class RequestFailed extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {string | undefined} clientId
   */
  constructor(code, message, clientId) {
    super(`${code}: ${message}`);
    this.name = "RequestFailed";
    this.code = code;
    this.clientId = clientId;
  }
}

/** The client stopped: closed by the application (1000) or by a terminal close code. */
export class ClientClosed extends Error {
  /**
   * @param {number} closeCode
   * @param {string} [reason]
   */
  constructor(closeCode, reason = "") {
    super(`closed with ${closeCode} ${reason}`.trim());
    this.name = "ClientClosed";
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

const OPEN = 1;

export class SwitchboardClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    const given = typeof options.urls === "string" ? [options.urls] : [...options.urls];
    if (given.length === 0) throw new TypeError("at least one gateway URL is needed");
    this.random = options.random ?? Math.random;
    /** The URLs in the order they are tried. */
    this.urls = options.shuffleUrls === false ? given : urlOrder(given, this.random);
    this.token = options.token;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError("no WebSocket: pass one (Node: the ws package)");
    this.pingIntervalMs = options.pingIntervalMs ?? 10_000;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 5_000;
    this.replyTimeoutMs = options.replyTimeoutMs ?? 10_000;
    this.openTimeoutMs = options.openTimeoutMs ?? 5_000;
    this.openTimeoutMaxMs = options.openTimeoutMaxMs ?? 20_000;
    this.refreshBeforeMs = options.refreshBeforeMs ?? 30_000;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 30_000;
    this.seen = new SeenMids(options.seenMids ?? 10_000);
    /** @type {ClientState} */
    this.state = "idle";
    /** @type {string | null} uid from `ready` */
    this.uid = null;
    /** @type {string | null} URL of the current ready connection */
    this.url = null;
    /** @type {ClientClosed | null} */
    this.closed = null;
    this.stats = {
      reconnects: 0,
      duplicatesDropped: 0,
      resentRequests: 0,
      refreshes: 0,
      gateways: /** @type {string[]} */ ([]),
    };

    this._index = options.startIndex ?? 0;
    this._ids = 0;
    // Client ids must stay unique across tabs and reloads: the router dedups on (uid, id).
    this._idPrefix = Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
    /** @type {Map<string, {text: string, resolve?: (v: any) => void, reject?: (e: Error) => void, room?: string}>} room: of a join */
    this._pending = new Map();
    /** @type {Set<string>} rooms to join again after each reconnect */
    this._rooms = new Set();
    /** @type {string[]} acks waiting for a connection */
    this._unsentAcks = [];
    /** @type {any} the current socket, once ready */
    this._ws = null;
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    this._handling = Promise.resolve();
    /** @type {(() => void) | null} ends the current connection at once (used by close()) */
    this._abort = null;
    /** @type {(() => void) | null} ends the current reconnect delay early */
    this._wake = null;
    /** @type {Array<{resolve: () => void, reject: (e: Error) => void}>} */
    this._readyWaiters = [];
    this._loop = null;
    /** @type {SeqStore | null} given, or chosen at the first connection */
    this._seqStore = options.seqStore ?? null;
    /** @type {number | null} the highest seq processed */
    this.seq = this._seqStore ? (this._seqStore.load() ?? null) : null;
  }

  // Events

  /**
   * Listen to "message" (message: Message; may return a promise: the ack waits for it),
   * "state" (state: ClientState), "ready" ({uid, url}), "kicked" (reason), "closed" (ClientClosed),
   * "handlerError" (error, message), "refreshed" (), "refreshError" (error: the connection
   * keeps its token, and is closed with 4004 at its exp unless a later try succeeds),
   * "receipt" (Receipt), "synced" (the inbox's head: everything before it was pushed).
   * @param {string} event
   * @param {Function} listener
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event)?.add(listener);
    return () => this._listeners.get(event)?.delete(listener);
  }

  /**
   * @param {string} event
   * @param {...any} args
   */
  _emit(event, ...args) {
    const results = [];
    for (const listener of this._listeners.get(event) ?? []) {
      results.push(listener(...args));
    }
    return results;
  }

  // Lifecycle

  /**
   * Start connecting; resolves at the first `ready`, rejects with ClientClosed after a
   * terminal close (invalid token, kicked).
   * @returns {Promise<void>}
   */
  start() {
    if (!this._loop) {
      this._setState("connecting");
      this._loop = this._reconnectForever();
    }
    return this.waitReady();
  }

  /** @returns {Promise<void>} resolves when a connection is ready */
  waitReady() {
    if (this.closed) return Promise.reject(this.closed);
    if (this._ws) return Promise.resolve();
    return new Promise((resolve, reject) => this._readyWaiters.push({ resolve, reject }));
  }

  /** Stop: close the connection; pending requests reject with ClientClosed(1000). */
  async close() {
    this._stop(new ClientClosed(1000, "closed by the application"));
    await this._loop;
  }

  // Requests

  /**
   * Send a message; resolves with its mid once the gateway confirmed it. Sent again with the
   * same id after every reconnect until confirmed; the server delivers it once.
   * @param {SendOptions} options
   * @returns {Promise<string>}
   */
  send({ body, to, group, room, broadcast, id, transient }) {
    const targets = [to !== undefined, group !== undefined, room !== undefined, broadcast === true];
    if (targets.filter(Boolean).length !== 1) {
      return Promise.reject(new TypeError("give exactly one of to, group, room, broadcast: true"));
    }
    const clientId = id ?? this._nextId("c");
    /** @type {Record<string, unknown>} */
    const frame = { type: "send", id: clientId };
    if (to !== undefined) frame.to = to;
    else if (group !== undefined) frame.group = group;
    else if (room !== undefined) frame.room = room;
    else frame.broadcast = true;
    frame.body = body;
    if (transient === true) frame.transient = true;
    return this._request(clientId, frame);
  }

  /**
   * Join a room; joined again after each reconnect until `leave`.
   * @param {string} room
   * @returns {Promise<void>}
   */
  async join(room) {
    const clientId = this._nextId("j");
    await this._request(clientId, { type: "join", id: clientId, room });
  }

  /**
   * @param {string} room
   * @returns {Promise<void>}
   */
  async leave(room) {
    this._rooms.delete(room);
    const clientId = this._nextId("l");
    await this._request(clientId, { type: "leave", id: clientId, room });
  }

  /**
   * Which of these uids are online now (asked about 100 at a time, the most one frame takes).
   * @param {string[]} uids
   * @returns {Promise<string[]>}
   */
  async presence(uids) {
    const online = [];
    for (let start = 0; start < uids.length || start === 0; start += MAX_PRESENCE_UIDS) {
      const clientId = this._nextId("p");
      const piece = uids.slice(start, start + MAX_PRESENCE_UIDS);
      online.push(...(await this._request(clientId, { type: "presence", id: clientId, uids: piece })));
    }
    return online;
  }

  /**
   * A page of the conversation with a uid (`with`) or a `group`, oldest first: the newest
   * `limit` messages, or those below `seq` `before`. Rejects with RequestFailed `history_off`
   * when the server keeps no history.
   * @param {{with?: string, group?: string, before?: number, limit?: number}} query
   * @returns {Promise<{messages: Message[], more: boolean}>}
   */
  async history(query) {
    if ((query.with === undefined) === (query.group === undefined)) {
      throw new TypeError("give exactly one of with, group");
    }
    const clientId = this._nextId("h");
    /** @type {Record<string, unknown>} */
    const frame = { type: "history", id: clientId };
    if (query.with !== undefined) frame.with = query.with;
    else frame.group = query.group;
    if (query.before !== undefined) frame.before = query.before;
    frame.limit = query.limit ?? 50;
    const page = await this._request(clientId, frame);
    const messages = (page.messages ?? []).map((/** @type {any} */ m) => {
      const { type, ...message } = m;
      return message;
    });
    return { messages, more: page.more === true };
  }

  /**
   * The uid's conversations, the most recently active first, with unread counts; the next
   * page: `before` = the last item's `last.seq`.
   * @param {{before?: number, limit?: number}} [query]
   * @returns {Promise<Conversation[]>}
   */
  async conversations(query = {}) {
    const clientId = this._nextId("v");
    /** @type {Record<string, unknown>} */
    const frame = { type: "conversations", id: clientId, limit: query.limit ?? 50 };
    if (query.before !== undefined) frame.before = query.before;
    const page = await this._request(clientId, frame);
    return page.items ?? [];
  }

  /**
   * Mark the conversation of `mid` read up to it: the peer (a group message's sender) and the
   * uid's other connections get a receipt. Rejects with RequestFailed `not_found`, `history_off`.
   * @param {string} mid
   * @returns {Promise<void>}
   */
  async read(mid) {
    const clientId = this._nextId("m");
    await this._request(clientId, { type: "read", id: clientId, mid });
  }

  /**
   * Acknowledge a message (done for you after the "message" listeners resolved).
   * @param {string} mid
   */
  ack(mid) {
    this.seen.markHandled(mid);
    this._sendAcks([mid]);
  }

  // Internals: requests

  /** @param {string} kind */
  _nextId(kind) {
    this._ids += 1;
    return `${kind}${this._idPrefix}.${this._ids}`;
  }

  /**
   * @param {string} clientId
   * @param {Record<string, unknown>} frame
   * @returns {Promise<any>}
   */
  _request(clientId, frame) {
    if (this.closed) return Promise.reject(this.closed);
    const text = JSON.stringify(frame);
    /** @type {ReturnType<typeof setInterval> | undefined} */
    let resend;
    const answered = new Promise((resolve, reject) => {
      const request = {
        text,
        resolve,
        reject,
        room: frame.type === "join" && typeof frame.room === "string" ? frame.room : undefined,
      };
      this._pending.set(clientId, request);
      // Without a ready connection it goes out after the next ready.
      if (this._ws) this._sendText(this._ws, text);
      // No answer in time: the frame or its answer may have been lost (a broker restart, for
      // one). The same id makes sending it again safe: the server carries it out once.
      resend = setInterval(() => {
        if (this._ws && this._pending.get(clientId) === request) this._sendText(this._ws, text);
      }, this.replyTimeoutMs);
    });
    return answered.finally(() => clearInterval(resend));
  }

  /**
   * @param {any} ws
   * @param {string} text
   */
  _sendText(ws, text) {
    if (ws.readyState !== OPEN) return false;
    try {
      ws.send(text);
      return true;
    } catch {
      return false; // the close event follows; the request is sent again after reconnecting
    }
  }

  /** @param {string[]} mids */
  _sendAcks(mids) {
    if (!this._ws || !this._sendText(this._ws, JSON.stringify({ type: "ack", mids }))) {
      this._unsentAcks.push(...mids);
    }
  }

  /** @param {any} frame */
  _onReply(frame) {
    const request = typeof frame.id === "string" ? this._pending.get(frame.id) : undefined;
    if (!request) return; // a late second receipt of a request sent twice
    this._pending.delete(frame.id);
    if (frame.type === "joined") this._rooms.add(frame.room);
    if (frame.type === "left") this._rooms.delete(frame.room);
    if (!request.resolve || !request.reject) return; // a join the client made itself
    if (frame.type === "error") {
      request.reject(new RequestFailed(String(frame.code), String(frame.message ?? ""), frame.id));
    } else if (frame.type === "sent") {
      request.resolve(frame.mid);
    } else if (frame.type === "presence") {
      request.resolve(Array.isArray(frame.online) ? frame.online : []);
    } else if (frame.type === "history" || frame.type === "conversations" || frame.type === "marked") {
      request.resolve(frame);
    } else {
      request.resolve(frame.room);
    }
  }

  /**
   * Send `refresh` on this connection; resolves at `refreshed`, rejects with RequestFailed
   * (the connection keeps its old token) or after `replyTimeoutMs`. Never sent again after a
   * reconnect: a new connection sends `init` with a new token.
   * @param {any} ws
   * @param {string} token
   * @returns {{clientId: string, answered: Promise<void>}}
   */
  _refresh(ws, token) {
    const clientId = this._nextId("r");
    const text = JSON.stringify({ type: "refresh", id: clientId, token });
    const answered = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(clientId);
        reject(new Error("refresh unanswered"));
      }, this.replyTimeoutMs);
      const settle = (/** @type {Function} */ then) => (/** @type {any} */ value) => {
        clearTimeout(timer);
        then(value);
      };
      this._pending.set(clientId, { text, resolve: settle(resolve), reject: settle(reject) });
      this._sendText(ws, text);
    });
    return { clientId, answered };
  }

  // Internals: messages

  /** @param {any} frame */
  _onMessage(frame) {
    const mid = frame.mid;
    if (typeof mid !== "string") return;
    // Room, broadcast and transient messages are never kept, so they take no ack.
    const needsAck = frame.room === undefined && frame.broadcast !== true && frame.transient !== true;
    if (this.seen.has(mid)) {
      this.stats.duplicatesDropped += 1;
      // Handled already: ack this copy. Still being handled: that ack will cover it.
      if (this.seen.isHandled(mid)) {
        this._processed(frame.seq);
        if (needsAck) this._sendAcks([mid]);
      }
      return;
    }
    this.seen.add(mid);
    /** @type {Message} */
    const message = { ...frame };
    delete (/** @type {any} */ (message).type);
    // Listeners run one message at a time, in arrival order; the ack waits for them.
    this._handling = this._handling.then(async () => {
      try {
        await Promise.all(this._emit("message", message));
      } catch (error) {
        this.seen.forget(mid); // not handled: a replay gets another chance
        this._emit("handlerError", error, message);
        return;
      }
      if (needsAck) this.ack(mid);
      else this.seen.markHandled(mid);
      this._processed(frame.seq);
    });
  }

  /** @param {any} frame */
  _onReceipt(frame) {
    if (typeof frame.by !== "string" || typeof frame.mid !== "string") return;
    /** @type {Receipt} */
    const receipt = { by: frame.by, mid: frame.mid };
    if (Number.isSafeInteger(frame.seq)) receipt.seq = frame.seq;
    // In order with the messages before it: its seq counts once they were handled.
    this._handling = this._handling.then(() => {
      try {
        this._emit("receipt", receipt);
      } catch (error) {
        this._emit("handlerError", error, receipt);
      }
      this._processed(receipt.seq);
    });
  }

  /** @param {any} frame */
  _onSynced(frame) {
    const head = frame.seq;
    if (!Number.isSafeInteger(head)) return;
    this._handling = this._handling.then(() => {
      // A head below the cursor: not the inbox the client knew (a reset database).
      if (this.seq !== null && head < this.seq) {
        this.seq = head;
        this._seqStore?.save(head);
      }
      this._emit("synced", head);
    });
  }

  /** The highest seq processed rises to `seq` (a number), and is saved. @param {unknown} seq */
  _processed(seq) {
    if (typeof seq !== "number" || !Number.isSafeInteger(seq)) return;
    if (this.seq !== null && seq <= this.seq) return;
    this.seq = seq;
    this._seqStore?.save(seq);
  }

  /** The store of the uid in `token`, at the first connection, when none was given. @param {string} token */
  _chooseSeqStore(token) {
    if (this._seqStore) return;
    const uid = tokenSubject(token);
    this._seqStore =
      uid !== null && globalThis.localStorage ? new LocalStorageSeqStore(`switchboard.seq.${uid}`) : new MemorySeqStore();
    const stored = this._seqStore.load() ?? null;
    if (stored !== null && (this.seq === null || stored > this.seq)) this.seq = stored;
    else if (this.seq !== null) this._seqStore.save(this.seq);
  }

  // Internals: connections

  /** @param {ClientState} state */
  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._emit("state", state);
  }

  /** @param {ClientClosed} closed */
  _stop(closed) {
    if (this.closed) return;
    this.closed = closed;
    this._ws = null;
    for (const request of this._pending.values()) request.reject?.(closed);
    this._pending.clear();
    for (const waiter of this._readyWaiters.splice(0)) waiter.reject(closed);
    this._abort?.();
    this._wake?.();
    this._setState("closed");
    this._emit("closed", closed);
  }

  async _getToken() {
    return typeof this.token === "function" ? await this.token() : this.token;
  }

  async _reconnectForever() {
    let attempt = 0;
    // Connections that ended without `ready` since the last one that reached it.
    let failed = 0;
    while (!this.closed) {
      const url = this.urls[this._index % this.urls.length];
      this._index += 1;
      const deadlineMs = openDeadlineMs(failed, this.openTimeoutMs, this.openTimeoutMaxMs);
      const { code, reason, wasReady } = await this._connection(url, deadlineMs);
      if (this.closed) return;
      if (wasReady) {
        attempt = 0;
        failed = 0;
      } else {
        failed += 1;
      }
      if (code !== null && TERMINAL_CLOSE_CODES.has(code)) {
        this._stop(new ClientClosed(code, reason));
        return;
      }
      this._setState(this.stats.gateways.length > 0 ? "reconnecting" : "connecting");
      const delayMs = reconnectDelayMs(attempt, code, this.backoffBaseMs, this.backoffMaxMs, this.random);
      attempt += 1;
      this.stats.reconnects += 1;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, delayMs);
        this._wake = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
      this._wake = null;
    }
  }

  /**
   * One connection from open to close, `ready` within `deadlineMs` of opening; never rejects.
   * @param {string} url
   * @param {number} deadlineMs
   * @returns {Promise<{code: number | null, reason: string, wasReady: boolean}>}
   */
  async _connection(url, deadlineMs) {
    let token;
    try {
      token = await this._getToken();
    } catch {
      return { code: null, reason: "no token", wasReady: false };
    }
    if (this.closed) return { code: null, reason: "", wasReady: false };
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new this.WebSocket(url);
      } catch {
        resolve({ code: null, reason: "bad url", wasReady: false });
        return;
      }
      let wasReady = false;
      let kickedReason = "";
      let ended = false;
      /** @type {any} */
      let pingTimer = null;
      /** @type {any} */
      let pongTimer = null;
      /** @type {any} */
      let refreshTimer = null;
      /** @type {string | null} the refresh waiting for its answer on this connection */
      let refreshId = null;

      const end = (/** @type {number | null} */ code, /** @type {string} */ reason) => {
        if (ended) return;
        ended = true;
        clearTimeout(openTimer);
        clearTimeout(pingTimer);
        clearTimeout(pongTimer);
        clearTimeout(refreshTimer);
        if (refreshId !== null) {
          // Belongs to this connection: never sent again on the next one.
          const refresh = this._pending.get(refreshId);
          this._pending.delete(refreshId);
          refresh?.reject?.(new Error("connection closed"));
        }
        ws.onopen = ws.onmessage = ws.onclose = null;
        // A socket closed while it connects still reports an error: heard here, and dropped
        // (Node's `ws` throws an error that nothing listens to, and the process dies).
        ws.onerror = () => {};
        if (this._ws === ws) this._ws = null;
        this.url = null;
        this._abort = null;
        resolve({ code, reason: kickedReason || reason, wasReady });
      };
      // A dead peer never completes a close handshake: forget the socket at once.
      const kill = () => {
        const socket = ws;
        end(null, "no answer");
        try {
          if (typeof socket.terminate === "function") socket.terminate();
          else socket.close(4000, "no answer");
        } catch {
          // already closing
        }
      };
      this._abort = kill;
      const openTimer = setTimeout(kill, deadlineMs);
      const schedulePing = () => {
        pingTimer = setTimeout(() => {
          this._sendText(ws, JSON.stringify({ type: "ping", id: this._nextId("k") }));
          pongTimer = setTimeout(kill, this.pongTimeoutMs);
        }, this.pingIntervalMs);
      };

      // Before exp, a new token from the token function replaces the connection's.
      let expiresMs = tokenExpiryMs(token);
      const scheduleRefresh = (/** @type {number} */ delayMs) => {
        refreshTimer = setTimeout(refreshToken, delayMs);
      };
      const refreshToken = async () => {
        let fresh;
        try {
          fresh = await this._getToken();
          if (ended) return;
          const { clientId, answered } = this._refresh(ws, fresh);
          refreshId = clientId;
          await answered;
        } catch (error) {
          if (ended || expiresMs === null) return;
          this._emit("refreshError", error);
          scheduleRefresh(refreshRetryDelayMs(expiresMs, Date.now()));
          return;
        } finally {
          refreshId = null;
        }
        if (ended) return;
        this.stats.refreshes += 1;
        this._emit("refreshed");
        expiresMs = tokenExpiryMs(fresh);
        if (expiresMs !== null) scheduleRefresh(refreshDelayMs(expiresMs, Date.now(), this.refreshBeforeMs));
      };

      this._chooseSeqStore(token);
      ws.onopen = () => {
        /** @type {Record<string, unknown>} */
        const init = { type: "init", token };
        if (this.seq !== null) init.since = this.seq;
        this._sendText(ws, JSON.stringify(init));
      };
      ws.onerror = () => {}; // the close event follows and decides
      ws.onclose = (/** @type {{code: number, reason: string}} */ event) => {
        end(event.code === 1006 ? null : event.code, event.reason ?? "");
      };
      ws.onmessage = (/** @type {{data: any}} */ event) => {
        let frame;
        try {
          frame = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
        } catch {
          return;
        }
        if (!frame || typeof frame !== "object") return;
        switch (frame.type) {
          case "ready":
            wasReady = true;
            clearTimeout(openTimer);
            this._onReady(ws, url, frame);
            schedulePing();
            if (typeof this.token === "function" && expiresMs !== null) {
              scheduleRefresh(refreshDelayMs(expiresMs, Date.now(), this.refreshBeforeMs));
            }
            break;
          case "message":
            this._onMessage(frame);
            break;
          case "receipt":
            this._onReceipt(frame);
            break;
          case "synced":
            this._onSynced(frame);
            break;
          case "pong":
            clearTimeout(pongTimer);
            clearTimeout(pingTimer);
            schedulePing();
            break;
          case "kicked":
            kickedReason = String(frame.reason ?? "");
            this._emit("kicked", kickedReason);
            break;
          case "sent":
          case "error":
          case "joined":
          case "left":
          case "presence":
          case "refreshed":
          case "history":
          case "conversations":
          case "marked":
            this._onReply(frame);
            break;
          default:
            break;
        }
      };
    });
  }

  /**
   * @param {any} ws
   * @param {string} url
   * @param {any} frame
   */
  _onReady(ws, url, frame) {
    // Requests made from now on go out themselves; this snapshot is everything before.
    this._ws = ws;
    this.uid = frame.uid;
    this.url = url;
    this.stats.gateways.push(url);
    const waiting = [...this._pending.values()];
    const joining = new Set(waiting.map((r) => r.room).filter((room) => room !== undefined));
    this._setState("ready");
    this._emit("ready", { uid: this.uid, url });
    for (const waiter of this._readyWaiters.splice(0)) waiter.resolve();
    for (const room of [...this._rooms].sort()) {
      if (joining.has(room)) continue;
      const clientId = this._nextId("j");
      const text = JSON.stringify({ type: "join", id: clientId, room });
      this._pending.set(clientId, { text, room });
      this._sendText(ws, text);
    }
    for (const request of waiting) {
      this.stats.resentRequests += 1;
      this._sendText(ws, request.text);
    }
    if (this._unsentAcks.length > 0) this._sendAcks(this._unsentAcks.splice(0));
  }
}
