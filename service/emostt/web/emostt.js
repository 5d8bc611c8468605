// emostt.js: a small browser client for emostt's streaming protocol (docs/protocol.md).
//
// No build step, no dependencies: an ES module plus its AudioWorklet, capture-worklet.js, which
// must be served next to it (or pass `workletUrl`). It captures the microphone, streams PCM16 to
// `/ws/stt/<device_id>` and emits the server's events as DOM events whose `detail` is the event.
//
//   import { EmosttClient } from "./emostt.js";
//   const client = new EmosttClient();
//   client.addEventListener("final", (e) => console.log(e.detail.text, e.detail.emotion.label));
//   await client.start({ url: "wss://stt.example.com", deviceId: "kiosk-1", token });
//   …
//   await client.stop(); // the last finals arrive before it resolves
//
// Sample rate: the AudioContext's when the server accepts it (`SERVER_SAMPLE_RATES`; resampled to
// 16 kHz server-side), else (or with `resample: true`) 16 kHz, resampled linearly in the worklet.
//
// Reconnection, the clients' one rule (the Python SDK's emostt_client/protocol.py; the constants
// below are checked against it): after a close with 1001, 1006 (network loss), 1011, 1012
// (restart) or 1013 (overloaded), a new session (utterance ids restart at u1) after an exponential
// backoff with jitter. 1008 (unauthorized, origin, rate limit…), any other code and 1000 (`stop()`,
// or a session limit: an `idle_timeout` or `session_too_long` error first) end it with `closed`.

/** Sample rates the server accepts in `?sample_rate=`. */
export const SERVER_SAMPLE_RATES = Object.freeze([8000, 16000, 22050, 24000, 32000, 44100, 48000]);

/** The device ids the server takes (in the URL path, a token's binding, a Redis Stream key). */
export const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
export const DEVICE_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ : - (starting with a letter or digit)";

/** Seconds of microphone audio kept while the session is not ready yet (connecting, reconnecting). */
export const MAX_PENDING_S = 2;

/** Close codes after which the client reconnects. */
export const RETRYABLE_CLOSE_CODES = Object.freeze([1001, 1006, 1011, 1012, 1013]);

/**
 * @typedef {{label: string, scores: Record<string, number>}} Scored
 * @typedef {{type: string, session_id: string, seq: number}} ServerEvent
 * @typedef {ServerEvent & {device_id: string, model: {name: string, revision: string},
 *   sample_rate: number, config: object}} ReadyEvent
 * @typedef {ServerEvent & {utterance_id: string, audio_start_ms: number}} SpeechStartedEvent
 * @typedef {ServerEvent & {utterance_id: string, text: string, audio_start_ms: number,
 *   audio_end_ms: number}} PartialEvent
 * @typedef {ServerEvent & {utterance_id: string, text: string, confidence: number,
 *   language: Scored, emotion: Scored, event: Scored, gated: boolean, gate_reasons: string[],
 *   degraded: boolean, end_reason: string, duration_ms: number, audio_start_ms: number,
 *   audio_end_ms: number, latency_ms: number, mood?: Scored, end_of_turn_confidence?: number | null,
 *   keyterms_matched?: string[], words?: {word: string, start_ms: number, end_ms: number,
 *   confidence: number}[]}} FinalEvent `keyterms_matched`: with `keyterms`, those in `text`.
 * @typedef {ServerEvent & {utterance_id: string, text: string, confidence: number}} EagerEndOfTurnEvent
 *   Semantic turns (`turnDetection`): `confidence` (and a final's `end_of_turn_confidence`) is
 *   the turn model's P(turn complete); the turn may be over: `turn_resumed` or the final follows.
 * @typedef {ServerEvent & {utterance_id: string}} TurnResumedEvent
 * @typedef {ServerEvent & {from: string, to: string, utterance_id: string,
 *   scores: Record<string, number>}} EmotionChangedEvent
 * @typedef {{type: "error", code: string, message: string, retryable: boolean,
 *   utterance_id?: string, session_id?: string, seq?: number}} EmosttErrorEvent
 *   Errors from the server, and the client's own (`code`: "microphone", "connection", "protocol").
 * @typedef {{attempt: number, delay_ms: number, code: number}} ReconnectingEvent
 * @typedef {{code: number, reason: string, error: EmosttErrorEvent | null}} ClosedEvent
 *   The stream ended: `stop()`, a close that is not retried, or reconnection gave up.
 *
 * @typedef {{ready: ReadyEvent, config: ServerEvent, speech_started: SpeechStartedEvent,
 *   partial: PartialEvent, final: FinalEvent, emotion_changed: EmotionChangedEvent,
 *   eager_end_of_turn: EagerEndOfTurnEvent, turn_resumed: TurnResumedEvent,
 *   error: EmosttErrorEvent, reconnecting: ReconnectingEvent, closed: ClosedEvent}} EmosttEventMap
 *   Event type → `detail` of the CustomEvent dispatched for it.
 */

/**
 * @typedef {object} ConnectOptions
 * @property {string} [url] server base URL: ws(s):// or http(s):// (default: this page's origin)
 * @property {string} deviceId 1–64 of `A-Z a-z 0-9 . _ : -`
 * @property {string} [token] sent as the `bearer.<token>` subprotocol
 * @property {number} [sampleRate] of the audio you send (default 16000)
 * @property {object} [config] a session `config` message sent on each connection (see protocol)
 * @property {{type: "silence" | "semantic", eagerness?: string}} [turnDetection] its `turn_detection`
 * @property {string[]} [keyterms] its `keyterms`: words to bias decoding towards (≤ 100, 1–64 chars)
 * @property {number} [maxAttempts] reconnection attempts after each drop (default 6; 0: never)
 */

/**
 * @typedef {ConnectOptions & {resample?: boolean, chunkMs?: number, workletUrl?: string | URL,
 *   audio?: MediaTrackConstraints}} StartOptions
 *   `resample`: always send 16 kHz (less bandwidth); `chunkMs`: audio per message (default 100);
 *   `audio`: getUserMedia constraints (default: echo cancellation on, no noise suppression or
 *   automatic gain, which change what the emotion model hears).
 */

const DEFAULT_AUDIO = { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: false };

export class EmosttClient extends EventTarget {
  /** @type {WebSocket | null} */ #ws = null;
  /** @type {ConnectOptions | null} */ #options = null;
  /** @type {AudioContext | null} */ #context = null;
  /** @type {MediaStream | null} */ #stream = null;
  /** @type {AudioWorkletNode | null} */ #node = null;
  #attempt = 0;
  #ready = false; // the open connection has received `ready`
  #stopping = false;
  /** @type {(ArrayBuffer | ArrayBufferView)[]} */ #pending = [];
  #pendingBytes = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #retryTimer;
  /** @type {((value: ClosedEvent) => void) | null} */ #onClosed = null;
  /** @type {Promise<ClosedEvent | null> | null} */ #stopped = null;

  /** The sample rate being sent, once started. */
  sampleRate = 0;

  /** True while a connection is open and has received `ready`. */
  get connected() {
    return this.#ready && this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  /**
   * Listen to one event type; returns a function that removes the listener.
   * @template {keyof EmosttEventMap} K
   * @param {K} type
   * @param {(detail: EmosttEventMap[K]) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    const listener = (/** @type {Event} */ event) => handler(/** @type {CustomEvent} */ (event).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Capture the microphone and stream it. Resolves once the server sent `ready` (rejects if the
   * microphone cannot be opened or the first connection is refused for good).
   * @param {StartOptions} options
   * @returns {Promise<ReadyEvent>}
   */
  async start(options) {
    if (this.#options || this.#context) throw new Error("already started: call stop() first");
    try {
      // The context first, while the click that called start() still counts as a user gesture.
      const context = (this.#context = new AudioContext({ latencyHint: "interactive" }));
      this.#stream = await navigator.mediaDevices.getUserMedia({
        audio: { ...DEFAULT_AUDIO, ...options.audio },
      });
      const native = context.sampleRate;
      this.sampleRate = !options.resample && SERVER_SAMPLE_RATES.includes(native) ? native : 16000;
      const workletUrl = options.workletUrl ?? new URL("./capture-worklet.js", import.meta.url);
      await context.audioWorklet.addModule(workletUrl);
      const node = (this.#node = new AudioWorkletNode(context, "emostt-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        processorOptions: { targetRate: this.sampleRate, chunkMs: options.chunkMs ?? 100 },
      }));
      node.port.onmessage = (event) => {
        if (event.data instanceof ArrayBuffer) this.sendAudio(event.data);
      };
      // The node must reach the destination to be pulled; a muted gain keeps the room quiet.
      const mute = new GainNode(context, { gain: 0 });
      context.createMediaStreamSource(this.#stream).connect(node).connect(mute).connect(context.destination);
      await context.resume();
    } catch (err) {
      await this.#releaseMicrophone();
      const error = clientError("microphone", `cannot capture the microphone: ${describe(err)}`);
      this.#emit("error", error);
      throw Object.assign(new Error(error.message), { cause: err });
    }
    try {
      return await this.connect({ ...options, sampleRate: this.sampleRate });
    } catch (err) {
      await this.#releaseMicrophone();
      throw err;
    }
  }

  /**
   * Open the session without the microphone (send audio yourself with `sendAudio`). Resolves on
   * `ready`; rejects when the stream ends before it (`closed` is emitted too).
   * @param {ConnectOptions} options
   * @returns {Promise<ReadyEvent>}
   */
  connect(options) {
    if (this.#options) return Promise.reject(new Error("already connected: call stop() first"));
    if (!DEVICE_ID.test(options.deviceId)) {
      // The server would refuse it (1008 invalid_device_id) on every attempt.
      return Promise.reject(new Error(`invalid deviceId ${JSON.stringify(options.deviceId)}: ${DEVICE_ID_RULE}`));
    }
    const given = Object.entries({ turn_detection: options.turnDetection, keyterms: options.keyterms });
    const extra = Object.fromEntries(given.filter(([, value]) => value != null)); // into each config message
    this.#options = Object.keys(extra).length ? { ...options, config: { ...options.config, ...extra } } : options;
    this.#stopping = false;
    this.#attempt = 0;
    return new Promise((resolve, reject) => {
      const off = () => [offReady, offClosed].forEach((remove) => remove());
      const offReady = this.on("ready", (ready) => {
        off();
        resolve(ready);
      });
      const offClosed = this.on("closed", (closed) => {
        off();
        reject(Object.assign(new Error(closed.error?.message ?? `closed (${closed.code})`), { detail: closed }));
      });
      this.#open();
    });
  }

  /**
   * Send PCM s16le mono at `sampleRate` (the microphone does this by itself). Until the session
   * is ready (connecting, reconnecting) the last `MAX_PENDING_S` seconds are kept and sent first
   * once it is, so the first words are not cut off.
   * @param {ArrayBuffer | ArrayBufferView} pcm
   * @returns {boolean} whether it was sent now
   */
  sendAudio(pcm) {
    if (!this.#options || this.#stopping) return false;
    if (this.connected) {
      /** @type {WebSocket} */ (this.#ws).send(pcm);
      return true;
    }
    this.#pending.push(pcm);
    this.#pendingBytes += pcm.byteLength;
    const budget = MAX_PENDING_S * 2 * (this.#options.sampleRate ?? 16000);
    while (this.#pendingBytes > budget) this.#pendingBytes -= this.#pending.shift()?.byteLength ?? 0;
    return false;
  }

  /**
   * Send a control message: `{type: "config", …}`, `{type: "finalize"}`, `{type: "keepalive"}`.
   * @param {object} message
   */
  send(message) {
    if (this.connected) /** @type {WebSocket} */ (this.#ws).send(JSON.stringify(message));
  }

  /**
   * Change the session config (`{keyterms: ["Ada Lovelace"]}`, `{language: "en"}`…): sent now and
   * kept for each later connection. Answered by a `config` event, or an `invalid_config` error.
   * @param {Record<string, any>} fields
   */
  configure(fields) {
    if (!this.#options) return;
    const config = /** @type {Record<string, any>} */ ({ ...this.#options.config });
    for (const [key, value] of Object.entries(fields)) {
      const nested = value?.constructor === Object && config[key]?.constructor === Object; // vad, gating…
      config[key] = nested ? { ...config[key], ...value } : value; // as the server merges them
    }
    this.#options = { ...this.#options, config };
    this.send({ ...fields, type: "config" });
  }

  /**
   * Stop the microphone, end the session and wait for its last finals (at most `timeoutMs`).
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<ClosedEvent | null>} the `closed` event, or null if nothing was open
   */
  stop({ timeoutMs = 5000 } = {}) {
    return (this.#stopped ??= this.#stop(timeoutMs).finally(() => (this.#stopped = null)));
  }

  /** @param {number} timeoutMs */
  async #stop(timeoutMs) {
    if (!this.#options) {
      await this.#releaseMicrophone();
      return null;
    }
    clearTimeout(this.#retryTimer);
    await this.#flushMicrophone();
    this.#stopping = true;
    await this.#releaseMicrophone();
    const ws = this.#ws;
    const stopped = { code: 1000, reason: "stopped", error: null };
    if (ws === null || ws.readyState !== WebSocket.OPEN) return this.#finish(stopped);
    const closed = new Promise((resolve) => (this.#onClosed = resolve));
    ws.send(JSON.stringify({ type: "close" })); // the server sends every pending final, then 1000
    const timer = setTimeout(() => ws.close(1000, "client stop"), timeoutMs);
    const result = await closed;
    clearTimeout(timer);
    return /** @type {ClosedEvent} */ (result);
  }

  #open() {
    const options = /** @type {ConnectOptions} */ (this.#options);
    const protocols = ["emostt.v1", ...(options.token ? [`bearer.${options.token}`] : [])];
    let ws;
    try {
      ws = this.#ws = new WebSocket(streamUrl(options), protocols);
    } catch (err) {
      // A malformed URL or a token that is not a valid subprotocol: retrying would not help.
      this.#finish({ code: 1008, reason: "", error: clientError("connection", describe(err)) });
      return;
    }
    ws.binaryType = "arraybuffer";
    /** @type {EmosttErrorEvent | null} */
    let lastError = null;
    ws.onmessage = (message) => {
      if (typeof message.data !== "string") return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        this.#emit("error", clientError("protocol", "the server sent a message that is not JSON"));
        return;
      }
      if (event.type === "error") lastError = event;
      if (event.type === "ready") {
        this.#attempt = 0;
        if (options.config) ws.send(JSON.stringify({ ...options.config, type: "config" }));
        for (const pcm of this.#pending) ws.send(pcm);
        this.#pending = [];
        this.#pendingBytes = 0;
        this.#ready = true;
      }
      this.#emit(event.type, event);
    };
    ws.onclose = (close) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#ready = false;
      const closed = { code: close.code, reason: close.reason, error: lastError };
      const maxAttempts = options.maxAttempts ?? 6;
      const retry = !this.#stopping && RETRYABLE_CLOSE_CODES.includes(close.code) && this.#attempt < maxAttempts;
      if (!retry) return void this.#finish(closed);
      this.#attempt += 1;
      const base = Math.min(10_000, 500 * 2 ** (this.#attempt - 1));
      const delay = Math.round(base * (1 - 0.5 * Math.random())); // jitter: devices dropped together spread out
      this.#emit("reconnecting", { attempt: this.#attempt, delay_ms: delay, code: close.code });
      this.#retryTimer = setTimeout(() => this.#open(), delay);
    };
  }

  /** @param {ClosedEvent} closed */
  #finish(closed) {
    clearTimeout(this.#retryTimer);
    const ws = this.#ws;
    if (ws && ws.readyState === WebSocket.CONNECTING) ws.close(1000); // stopped while connecting
    this.#options = null;
    this.#ws = null;
    this.#ready = false;
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#attempt = 0;
    void this.#releaseMicrophone();
    this.#emit("closed", closed);
    this.#onClosed?.(closed);
    this.#onClosed = null;
    return closed;
  }

  async #flushMicrophone() {
    const node = this.#node;
    if (!node) return;
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 500);
      node.port.addEventListener("message", (event) => {
        if (event.data !== "flushed") return;
        clearTimeout(timer);
        resolve(undefined);
      });
      node.port.postMessage("flush");
    });
  }

  async #releaseMicrophone() {
    const context = this.#context;
    this.#stream?.getTracks().forEach((track) => track.stop());
    if (this.#node) this.#node.port.onmessage = null;
    this.#stream = null;
    this.#node = null;
    this.#context = null;
    if (context && context.state !== "closed") await context.close();
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * `ws(s)://host/ws/stt/<device_id>?sample_rate=N` from a base URL (http(s) becomes ws(s)).
 * @param {ConnectOptions} options
 * @returns {string}
 */
export function streamUrl({ url, deviceId, sampleRate = 16000 }) {
  const base = new URL(url ?? globalThis.location.origin);
  base.protocol = base.protocol === "https:" || base.protocol === "wss:" ? "wss:" : "ws:";
  const prefix = base.pathname.replace(/\/ws\/stt\/.*$/, "").replace(/\/$/, "");
  base.pathname = `${prefix}/ws/stt/${encodeURIComponent(deviceId)}`;
  base.search = `?sample_rate=${sampleRate}`;
  base.hash = "";
  return base.toString();
}

/** @type {(code: string, message: string) => EmosttErrorEvent} */
const clientError = (code, message) => ({ type: "error", code, message, retryable: false });

/** @param {unknown} err */
function describe(err) {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
