// The page served at / : wires the form to EmosttClient and renders its events.
// Everything is written with textContent (never innerHTML): transcripts are untrusted text.
import { EmosttClient } from "./emostt.js";

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($("controls"));
const deviceInput = /** @type {HTMLInputElement} */ ($("device"));
const tokenInput = /** @type {HTMLInputElement} */ ($("token"));
const resampleInput = /** @type {HTMLInputElement} */ ($("resample"));
const semanticInput = /** @type {HTMLInputElement} */ ($("semantic"));
const keytermsInput = /** @type {HTMLInputElement} */ ($("keyterms"));
const toggle = /** @type {HTMLButtonElement} */ ($("toggle"));
const statusLine = $("status");
const partialLine = $("partial");
const turnNote = $("turn-note");
const finalsList = $("finals");
const finalsEmpty = $("finals-empty");
const moodLabel = $("mood-label");
const moodScores = $("mood-scores");
const moodTimeline = $("mood-timeline");
const moodNote = $("mood-note");
const template = /** @type {HTMLTemplateElement} */ ($("final-template"));

const MAX_FINALS = 200;
const MAX_MOOD_COLUMNS = 40;
const SCORE_BARS = 3;

// Defaults from the address (?device=…&resample=1&turns=semantic&keyterms=a,b) or the last device
// id used here. The token is never stored.
const params = new URLSearchParams(location.search);
deviceInput.value = params.get("device") ?? localStorage.getItem("emostt.device") ?? deviceInput.value;
resampleInput.checked = params.get("resample") === "1";
semanticInput.checked = params.get("turns") === "semantic";
keytermsInput.value = params.get("keyterms") ?? "";

/** The keyterms field as a list: comma-separated, blanks left out. */
const keyterms = () =>
  keytermsInput.value
    .split(",")
    .map((term) => term.trim())
    .filter(Boolean);

/** @type {EmosttClient | null} */
let client = null;

function setStatus(/** @type {string} */ text, /** @type {"" | "ok" | "warn" | "error"} */ tone = "") {
  statusLine.textContent = text;
  statusLine.dataset.tone = tone;
}

function setRunning(/** @type {boolean} */ running) {
  toggle.textContent = running ? "Stop" : "Start";
  toggle.dataset.running = String(running); // the label says it: no aria-pressed on a renamed button
  // The keyterms stay editable: a change is sent to the running session (see below).
  for (const input of [deviceInput, tokenInput, resampleInput, semanticInput]) input.disabled = running;
}

const percent = (/** @type {number} */ p) => `${Math.round(p * 100)} %`;

function speaking(/** @type {string} */ text) {
  partialLine.textContent = text;
  partialLine.classList.toggle("muted", text === "…");
}

/**
 * @param {import("./emostt.js").FinalEvent} final
 */
function addFinal(final) {
  const item = /** @type {HTMLElement} */ (template.content.firstElementChild?.cloneNode(true));
  item.dataset.utterance = final.utterance_id;
  const text = /** @type {HTMLElement} */ (item.querySelector(".text"));
  text.textContent = final.text || "(no words)";
  text.classList.toggle("muted", !final.text);

  const emotion = /** @type {HTMLElement} */ (item.querySelector(".emotion-tag"));
  emotion.textContent = final.emotion.label;
  emotion.dataset.emotion = final.emotion.label;
  emotion.title = `emotion: ${final.emotion.label}`;
  /** @type {HTMLElement} */ (item.querySelector(".language")).textContent =
    `language ${final.language.label} ${percent(final.language.scores[final.language.label] ?? 0)}`;
  /** @type {HTMLElement} */ (item.querySelector(".confidence")).textContent =
    `confidence ${final.confidence.toFixed(2)}`;
  /** @type {HTMLElement} */ (item.querySelector(".latency")).textContent =
    `latency ${Math.round(final.latency_ms)} ms`;
  // Semantic turns: the final ends the turn, with the turn model's confidence that it is over.
  if (final.end_of_turn_confidence != null)
    /** @type {HTMLElement} */ (item.querySelector(".turn")).textContent =
      `⏎ turn end (${final.end_of_turn_confidence.toFixed(2)})`;
  if (final.keyterms_matched?.length)
    /** @type {HTMLElement} */ (item.querySelector(".keyterms")).textContent =
      `keyterms: ${final.keyterms_matched.join(", ")}`;
  if (final.gated) {
    item.classList.add("is-gated");
    /** @type {HTMLElement} */ (item.querySelector(".gated")).textContent =
      `gated: ${final.gate_reasons.join(", ")}`;
  }

  const scores = /** @type {HTMLElement} */ (item.querySelector(".scores"));
  scores.setAttribute("aria-label", "Emotion scores");
  showScores(scores, final.emotion.scores);

  finalsList.prepend(item);
  finalsEmpty.hidden = true;
  while (finalsList.children.length > MAX_FINALS) finalsList.lastElementChild?.remove();
  if (final.mood) addMood(final.utterance_id, final.mood);
}

/**
 * The top scores as rows of label, bar and percentage (the bar is decoration: the text says it).
 * @param {HTMLElement} list
 * @param {Record<string, number>} scores
 */
function showScores(list, scores) {
  const top = Object.entries(scores)
    .sort((a, b) => b[1] - a[1])
    .slice(0, SCORE_BARS);
  list.replaceChildren();
  for (const [label, score] of top) {
    const row = document.createElement("li");
    const name = document.createElement("span");
    name.className = "score-label";
    name.textContent = label;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.dataset.emotion = label;
    fill.style.width = `${Math.max(1, Math.round(score * 100))}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "score-value";
    value.textContent = percent(score);
    row.append(name, bar, value);
    list.append(row);
  }
}

/**
 * The mood after a final: its label and scores, and one more column in the timeline (the mood's
 * distribution stacked, one colour per emotion).
 * @param {string} utterance
 * @param {import("./emostt.js").Scored} mood
 */
function addMood(utterance, mood) {
  moodLabel.textContent = mood.label;
  moodLabel.dataset.emotion = mood.label;
  showScores(moodScores, mood.scores);
  const ranked = Object.entries(mood.scores).sort((a, b) => b[1] - a[1]);
  const column = document.createElement("li");
  column.className = "column";
  column.title = `after ${utterance}: ${mood.label} (${ranked
    .slice(0, 3)
    .map(([label, score]) => `${label} ${percent(score)}`)
    .join(", ")})`;
  for (const [label, score] of ranked) {
    if (score < 0.02) continue;
    const part = document.createElement("span");
    part.dataset.emotion = label;
    part.style.height = `${score * 100}%`;
    part.setAttribute("aria-hidden", "true");
    column.append(part);
  }
  const text = document.createElement("span");
  text.className = "visually-hidden";
  text.textContent = column.title;
  column.append(text);
  moodTimeline.append(column);
  while (moodTimeline.children.length > MAX_MOOD_COLUMNS) moodTimeline.firstElementChild?.remove();
}

function newClient() {
  const c = new EmosttClient();
  c.on("ready", (ready) =>
    setStatus(
      `Listening: ${ready.sample_rate} Hz to ${ready.model.name}, session ${ready.session_id}.`,
      "ok",
    ),
  );
  c.on("speech_started", () => speaking("…"));
  c.on("partial", (partial) => speaking(partial.text || "…"));
  // An eager end of turn: the turn may be over (an agent could start its answer); it may resume.
  c.on("eager_end_of_turn", (eager) => {
    turnNote.textContent = `⏎? eager turn end (${eager.confidence.toFixed(2)})`;
  });
  c.on("turn_resumed", () => (turnNote.textContent = "↻ turn resumed"));
  c.on("final", (final) => {
    speaking("…");
    turnNote.textContent = "";
    addFinal(final);
  });
  c.on("emotion_changed", (change) => {
    moodNote.textContent = `Mood changed from ${change.from} to ${change.to} (after ${change.utterance_id}).`;
  });
  c.on("error", (error) =>
    setStatus(`Error: ${error.message} (${error.code})`, error.retryable ? "warn" : "error"),
  );
  c.on("reconnecting", (r) =>
    setStatus(
      `Connection lost (${r.code}); reconnecting in ${(r.delay_ms / 1000).toFixed(1)} s (attempt ${r.attempt})…`,
      "warn",
    ),
  );
  c.on("closed", (closed) => {
    setRunning(false);
    client = null;
    if (closed.error && closed.code !== 1000)
      setStatus(`Closed: ${closed.error.message} (${closed.error.code}).`, "error");
    else if (closed.code === 1000) setStatus("Stopped.");
    else setStatus(`Closed (code ${closed.code}).`, "error");
  });
  return c;
}

async function start() {
  if (!form.reportValidity()) return;
  localStorage.setItem("emostt.device", deviceInput.value);
  setRunning(true);
  setStatus("Opening the microphone…");
  client = newClient();
  try {
    await client.start({
      url: location.origin,
      deviceId: deviceInput.value,
      token: tokenInput.value.trim() || undefined,
      resample: resampleInput.checked,
      turnDetection: semanticInput.checked ? { type: "semantic", eagerness: "auto" } : undefined,
      keyterms: keyterms().length ? keyterms() : undefined,
    });
  } catch (err) {
    // The error or closed event already said why.
    setRunning(false);
    client = null;
    if (statusLine.dataset.tone !== "error")
      setStatus(`Could not start: ${err instanceof Error ? err.message : err}`, "error");
  }
}

async function stop() {
  const c = client;
  if (!c) return;
  toggle.disabled = true;
  setStatus("Stopping: waiting for the last results…");
  await c.stop();
  toggle.disabled = false;
}

// New keyterms while listening: the session takes them from its next utterance ([] clears them).
// Enter applies them (it would otherwise submit the form, which stops the session).
keytermsInput.addEventListener("change", () => client?.configure({ keyterms: keyterms() }));
keytermsInput.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !client) return;
  event.preventDefault();
  client.configure({ keyterms: keyterms() });
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  void (client ? stop() : start());
});

if (!window.isSecureContext) {
  setStatus("The microphone needs a secure page: open it over https:// (or on localhost).", "error");
} else if (!("audioWorklet" in AudioContext.prototype)) {
  setStatus("This browser has no AudioWorklet: use a current Chrome, Edge, Firefox or Safari.", "error");
} else {
  toggle.disabled = false;
  setStatus("Press Start and allow the microphone.");
}
