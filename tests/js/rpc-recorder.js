// Optional recording proxy (enabled by the harness when RPC_METHOD_LOG or
// RPC_BLOCK_METHODS is set):
// sits between the clients and the node, forwards HTTP and WebSocket JSON-RPC
// verbatim, and appends one JSON line per request to the log file:
//   {"file":"ethers.test.js","transport":"http","method":"eth_call","batch":3,"tags":["latest"]}
// ("batch" is the size of the JSON array the call arrived in, 0 = not batched;
// "tags" lists named block tags / subscription kinds found in the params).
// Summarise with: node tests/js/rpc-summary.js <logfile>
// RPC_BLOCK_METHODS=m1,m2 makes the proxy answer those methods with -32601
// itself (e.g. to check how viem copes with a node without eth_fillTransaction).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';

const TEST_FILE = path.basename(process.argv[1] || 'unknown');

function record(logFile, transport, body) {
  if (!logFile) return;
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch {
    fs.appendFileSync(logFile, `${JSON.stringify({ file: TEST_FILE, transport, method: '<unparseable>', batch: 0 })}\n`);
    return;
  }
  const calls = Array.isArray(parsed) ? parsed : [parsed];
  const batch = Array.isArray(parsed) ? parsed.length : 0;
  const lines = calls.map((c) => {
    const entry = { file: TEST_FILE, transport, method: typeof c?.method === 'string' ? c.method : '<no method>', batch };
    // named block tags and subscription kinds, for the summary
    const tags = JSON.stringify(c?.params ?? []).match(/"(latest|pending|earliest|safe|finalized|newHeads|logs|newPendingTransactions)"/g);
    if (tags) entry.tags = [...new Set(tags.map((t) => t.slice(1, -1)))];
    return JSON.stringify(entry);
  });
  if (lines.length === 0) lines.push(JSON.stringify({ file: TEST_FILE, transport, method: '<empty batch>', batch: 0 }));
  fs.appendFileSync(logFile, `${lines.join('\n')}\n`);
}

/**
 * Answers HTTP calls to `blocked` methods with -32601 locally (to see how the
 * clients cope with a node that lacks them); returns the body to forward
 * (null when nothing is left) and the local answers.
 */
function splitBlocked(body, blocked) {
  if (!blocked.size) return { forward: body, local: [], batch: false };
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { forward: body, local: [], batch: false };
  }
  const batch = Array.isArray(parsed);
  const calls = batch ? parsed : [parsed];
  const local = [];
  const rest = [];
  for (const c of calls) {
    if (c && blocked.has(c.method)) {
      local.push({ jsonrpc: '2.0', id: c.id ?? null, error: { code: -32601, message: `the method ${c.method} does not exist/is not available` } });
    } else {
      rest.push(c);
    }
  }
  if (!local.length) return { forward: body, local, batch };
  return { forward: rest.length ? JSON.stringify(batch ? rest : rest[0]) : null, local, batch };
}

/**
 * Starts the proxy on 127.0.0.1:listenPort forwarding to 127.0.0.1:upstreamPort.
 * logFile: where to append records (null: record nothing).
 * blockedMethods: methods answered with -32601 instead of being forwarded (HTTP only).
 * @returns {Promise<{ close(): Promise<void> }>}
 */
export async function startRecorder({ listenPort, upstreamPort, logFile, blockedMethods = [] }) {
  const blocked = new Set(blockedMethods);
  const upstreamHttp = `http://127.0.0.1:${upstreamPort}`;
  const upstreamWs = `ws://127.0.0.1:${upstreamPort}`;
  const sockets = new Set();

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks).toString();
      if (req.method === 'POST') record(logFile, 'http', body);
      const { forward, local, batch } = req.method === 'POST' ? splitBlocked(body, blocked) : { forward: body, local: [] };
      try {
        if (forward === null) {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(batch ? local : local[0]));
          return;
        }
        const upstream = await fetch(upstreamHttp + req.url, {
          method: req.method,
          headers: { 'content-type': req.headers['content-type'] || 'application/json' },
          body: req.method === 'POST' ? forward : undefined,
        });
        let text = await upstream.text();
        if (local.length && batch) {
          try {
            text = JSON.stringify([...JSON.parse(text), ...local]);
          } catch {
            // upstream answered something odd: pass it through
          }
        }
        res.writeHead(upstream.status, { 'content-type': upstream.headers.get('content-type') || 'application/json' });
        res.end(text);
      } catch (err) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`recorder: upstream unreachable: ${err.message}`);
      }
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (client) => {
      const upstream = new WebSocket(upstreamWs);
      const pending = [];
      upstream.on('open', () => {
        for (const m of pending.splice(0)) upstream.send(m);
      });
      upstream.on('message', (data, isBinary) => {
        if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
      });
      client.on('message', (data) => {
        const text = data.toString();
        record(logFile, 'ws', text);
        if (upstream.readyState === WebSocket.OPEN) upstream.send(text);
        else pending.push(text);
      });
      const closeBoth = () => {
        try { client.close(); } catch { /* ignore */ }
        try { upstream.close(); } catch { /* ignore */ }
      };
      client.on('close', closeBoth);
      client.on('error', closeBoth);
      upstream.on('close', closeBoth);
      upstream.on('error', closeBoth);
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, '127.0.0.1', resolve);
  });

  return {
    async close() {
      for (const c of wss.clients) c.terminate();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
