// A Jest-style test in JavaScript (node's own runner: `node --test`) driving mailfakes' control API.
// Start the server first:  .venv/bin/mailfakes serve --control 8025
// then:                    MAILFAKES_CONTROL=http://127.0.0.1:8025 node --test examples/control-api.test.mjs
// It starts a world, makes the next session's MAIL fail with 451, proves it with a raw SMTP client
// (node's net module), and stops the world.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";

const CONTROL = process.env.MAILFAKES_CONTROL ?? "http://127.0.0.1:8025";

async function api(method, path, body) {
  const res = await fetch(CONTROL + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

// One SMTP session: the greeting, EHLO, then MAIL FROM; resolves with the reply to MAIL.
function mailReply(host, port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    const say = ["EHLO client.fabrikam.test", "MAIL FROM:<sender@fabrikam.test>"];
    let buffer = "";
    sock.setTimeout(5000, () => sock.destroy(new Error("no reply in 5 s")));
    sock.on("error", reject);
    sock.on("data", (chunk) => {
      buffer += chunk.toString("latin1");
      let end;
      while ((end = buffer.indexOf("\r\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (line[3] === "-") continue; // a line of a multi-line reply
        if (say.length === 0) {
          sock.end("QUIT\r\n");
          resolve(line);
          return;
        }
        sock.write(say.shift() + "\r\n");
      }
    });
  });
}

describe("a smart host that fails the next message", () => {
  let world;

  before(async () => {
    const { status, json } = await api("POST", "/worlds", { scenario: "baseline-delivered" });
    assert.equal(status, 201);
    world = json;
  });

  after(async () => {
    await api("DELETE", `/worlds/${world.id}`);
  });

  it("answers 451 once, then takes mail again", async () => {
    const host = world.hosts[world.smart_host];
    const changed = await api("POST", `/worlds/${world.id}/hosts/${world.smart_host}/fail-next`, {
      n: 1,
      reply: "451 4.3.0 Try again later",
    });
    assert.equal(changed.status, 200);
    assert.equal(await mailReply(host, world.port), "451 4.3.0 Try again later");
    assert.match(await mailReply(host, world.port), /^250 /);
  });

  it("refuses a fault it cannot apply, and changes nothing", async () => {
    const bad = await api("PUT", `/worlds/${world.id}/hosts/${world.smart_host}/faults`, { tls: "maybe" });
    assert.equal(bad.status, 422);
    assert.match(bad.json.error, /tls/);
    assert.match(await mailReply(world.hosts[world.smart_host], world.port), /^250 /);
  });
});
