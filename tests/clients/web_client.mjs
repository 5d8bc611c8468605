// Drives clients/web/emostt.js in Node (its WebSocket, EventTarget and CustomEvent are the
// browser's APIs) for tests/clients/test_web_close_codes.py and test_web_turns.py: `node
// --experimental-websocket web_client.mjs <module URL> constants` prints the client's protocol
// constants; `... <module URL> connect <server URL>` connects, prints each event as a JSON line,
// stops the client once a session opened by a reconnect is ready, and exits when the stream is
// `closed`; `... <module URL> turns <server URL>` connects with semantic turns, sends 100 ms of
// audio, prints each event the client dispatches, and stops after the first final; `... <module
// URL> keyterms <server URL> <PCM file> <keyterm> <other>` (tests/clients/test_web_keyterms.py)
// opens a session without keyterms, then one with `keyterms: [keyterm]` that `configure()` changes
// to [other],
// sends the clip (PCM s16le, 16 kHz) and `finalize` for each final, and prints the configs the
// server answered and the finals.
const [moduleUrl, command, serverUrl, pcmPath, keyterm, other] = process.argv.slice(2);
const web = await import(moduleUrl);
const print = (type, detail) => console.log(JSON.stringify({ type, detail }));

if (command === "constants") {
  console.log(
    JSON.stringify({
      retryable_close_codes: web.RETRYABLE_CLOSE_CODES,
      sample_rates: web.SERVER_SAMPLE_RATES,
      device_id: web.DEVICE_ID.source,
      device_id_rule: web.DEVICE_ID_RULE,
    }),
  );
} else if (command === "turns") {
  const client = new web.EmosttClient();
  const types = ["ready", "config", "speech_started", "partial", "eager_end_of_turn", "turn_resumed", "error"];
  for (const type of types) client.on(type, (detail) => print(type, detail));
  client.on("final", (detail) => {
    print("final", detail);
    void client.stop({ timeoutMs: 5000 });
  });
  client.on("closed", (detail) => {
    print("closed", detail);
    process.exit(0);
  });
  setTimeout(() => process.exit(2), 15_000);
  const turnDetection = { type: "semantic", eagerness: "low" };
  await client.connect({ url: serverUrl, deviceId: "web-turns", config: { language: "en" }, turnDetection });
  client.sendAudio(new Int16Array(1600));
} else if (command === "keyterms") {
  const { readFileSync } = await import("node:fs");
  const pcm = readFileSync(pcmPath);
  setTimeout(() => process.exit(2), 60_000);
  const next = (client, type) => new Promise((resolve) => {
    const off = client.on(type, (detail) => {
      off();
      resolve(detail);
    });
  });
  const utterance = async (client) => {
    const final = next(client, "final");
    client.sendAudio(pcm);
    client.send({ type: "finalize" });
    return final;
  };
  const plain = new web.EmosttClient();
  await plain.connect({ url: serverUrl, deviceId: "web-plain" });
  print("plain_final", await utterance(plain));
  await plain.stop({ timeoutMs: 5000 });

  const client = new web.EmosttClient();
  client.on("error", (detail) => print("error", detail));
  let answered = next(client, "config"); // the answer to the config sent with `ready`
  await client.connect({ url: serverUrl, deviceId: "web-keyterms", keyterms: [keyterm] });
  print("config", await answered);
  print("final", await utterance(client));
  answered = next(client, "config");
  client.configure({ keyterms: [other] });
  print("config", await answered);
  print("final", await utterance(client));
  print("closed", await client.stop({ timeoutMs: 5000 }));
  process.exit(0);
} else {
  const client = new web.EmosttClient();
  let reconnecting = false;
  client.on("ready", (ready) => {
    print("ready", ready);
    if (reconnecting) void client.stop({ timeoutMs: 5000 });
  });
  client.on("reconnecting", (detail) => {
    print("reconnecting", detail);
    reconnecting = true;
  });
  client.on("error", (detail) => print("error", detail));
  client.on("closed", (detail) => {
    print("closed", detail);
    process.exit(0);
  });
  setTimeout(() => {
    print("timeout", null);
    process.exit(2);
  }, 15_000);
  client.connect({ url: serverUrl, deviceId: "web-1", maxAttempts: 3 }).catch(() => {}); // `closed` says why
}
