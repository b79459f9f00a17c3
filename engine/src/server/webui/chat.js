// onebitd's chat page. Every piece of text from the model or the user reaches the page
// through textContent, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "onebit.apiKey";
const history = [];
let running = null;

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setState(state, status) {
  document.body.dataset.state = state;
  $("send").disabled = state === "streaming";
  $("stop").disabled = state !== "streaming";
  if (status !== undefined) $("status").textContent = status;
}

// The error message of a non-2xx answer, whatever its body.
async function errorText(resp) {
  const body = await resp.text();
  try {
    return JSON.parse(body).error.message;
  } catch (_) {
    return resp.status + " " + resp.statusText;
  }
}

function rate(tokens, ms) {
  return ms > 0 ? (tokens * 1000 / ms).toFixed(1) : "–";
}

// Feeds the SSE stream of a chat completion to `onEvent`, one parsed `data:` payload at a
// time, until `[DONE]`.
async function readEvents(resp, onEvent) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  const answer = document.createTextNode("");
  const stats = document.createElement("span");
  stats.className = "stats";
  out.append(answer, stats);
  const abort = new AbortController();
  running = abort;
  setState("streaming", "generating…");
  let pieces = 0;
  let first = 0;
  let usage = null;
  let timings = null;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ messages: history, stream: true, stream_options: { include_usage: true } }),
      signal: abort.signal,
    });
    if (!resp.ok) throw new Error(await errorText(resp));
    await readEvents(resp, (ev) => {
      if (ev.error) throw new Error(ev.error.message);
      if (ev.usage) usage = ev.usage;
      if (ev.timings) timings = ev.timings;
      const delta = ev.choices && ev.choices[0] && ev.choices[0].delta;
      if (delta && delta.content) {
        if (!first) first = performance.now();
        pieces += 1;
        answer.textContent += delta.content;
        stats.textContent = rate(pieces, performance.now() - first) + " tok/s";
        out.scrollIntoView({ block: "end" });
      }
    });
    history.push({ role: "assistant", content: answer.textContent });
    const n = usage ? usage.completion_tokens : pieces;
    const tps = timings ? timings.predicted_per_second.toFixed(1) : rate(pieces, performance.now() - first);
    stats.textContent = n + " tokens, " + tps + " tok/s";
    setState("idle", "");
  } catch (e) {
    history.pop();
    out.remove();
    bubble("error", abort.signal.aborted ? "stopped" : String(e.message || e));
    setState("idle", "");
  } finally {
    running = null;
  }
}

async function showModel() {
  try {
    const resp = await fetch("/v1/models", { headers: headers() });
    if (!resp.ok) {
      $("model").textContent = await errorText(resp);
      return;
    }
    const m = (await resp.json()).data[0];
    $("model").textContent = m.id + (m.meta && m.meta.surface ? " on " + m.meta.surface : "");
  } catch (e) {
    $("model").textContent = String(e.message || e);
  }
}

function start() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => {
    localStorage.setItem(KEY_STORE, key.value.trim());
    showModel();
  });
  const message = $("message");
  $("compose").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = message.value.trim();
    if (!text || running) return;
    message.value = "";
    send(text);
  });
  message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      $("compose").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => running && running.abort());
  $("clear").addEventListener("click", () => {
    if (running) running.abort();
    history.length = 0;
    $("log").replaceChildren();
  });
  showModel();
}

start();
