// Drives clients/web/emostt.js in Node (its WebSocket, EventTarget and CustomEvent are the
// browser's APIs) for tests/clients/test_web_close_codes.py: `node --experimental-websocket
// web_client.mjs <module URL> constants` prints the client's protocol constants;
// `... <module URL> connect <server URL>` connects, prints each event as a JSON line, stops the
// client once a session opened by a reconnect is ready, and exits when the stream is `closed`.
const [moduleUrl, command, serverUrl] = process.argv.slice(2);
const web = await import(moduleUrl);

if (command === "constants") {
  console.log(
    JSON.stringify({
      retryable_close_codes: web.RETRYABLE_CLOSE_CODES,
      sample_rates: web.SERVER_SAMPLE_RATES,
      device_id: web.DEVICE_ID.source,
      device_id_rule: web.DEVICE_ID_RULE,
    }),
  );
} else {
  const client = new web.EmosttClient();
  const print = (type, detail) => console.log(JSON.stringify({ type, detail }));
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
