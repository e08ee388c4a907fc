// lmforge's chat page. The conversation lives here, in `conversation`; each reply is one streamed
// POST /v1/chat/completions (Server-Sent Events), the same request the openai client sends. Stop aborts
// the request (the server drops it from its batch); Regenerate asks again for the last reply.
"use strict";

const $ = (id) => document.getElementById(id);
const conversation = [];          // {role: "user" | "assistant", content}; the system prompt is sent apart
let model = null;                 // the served model's name, from GET /v1/models
let inFlight = null;              // the AbortController of the reply being streamed

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = $("api_key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function errorMessage(response) {
  const body = await response.json().catch(() => null);
  return body && body.error ? body.error.message : `${response.status} ${response.statusText}`;
}

async function loadModel() {
  const response = await fetch("/v1/models", {headers: headers()});
  if (!response.ok) throw new Error(await errorMessage(response));
  const listed = (await response.json()).data;
  const decoders = listed.filter((m) => m.task !== "classify");  // a classifier does not chat
  model = (decoders[0] || listed[0]).id;
  if (decoders.length < 2) {
    $("model").textContent = model;
    return;
  }
  const choose = document.createElement("select");  // several models served: the user picks one
  for (const m of decoders) choose.add(new Option(m.id, m.id));
  choose.addEventListener("change", () => { model = choose.value; });
  $("model").replaceChildren(choose);
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = role;
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;     // text, never HTML: a reply cannot inject markup
  div.append(who, content);
  $("messages").append(div);
  div.scrollIntoView({block: "end"});
  return div;
}

function render() {
  $("messages").replaceChildren();
  for (const m of conversation) bubble(m.role, m.content);
}

function number(id, parse) {
  const value = $(id).value.trim();
  return value === "" ? undefined : parse(value);
}

function requestBody() {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({role: "system", content: system});
  messages.push(...conversation);
  const stop = $("stop").value.split(",").map((s) => s.trim()).filter(Boolean);
  return {
    model, messages, stream: true, stream_options: {include_usage: true},
    temperature: number("temperature", parseFloat), top_p: number("top_p", parseFloat),
    max_tokens: number("max_tokens", (v) => parseInt(v, 10)), seed: number("seed", (v) => parseInt(v, 10)),
    stop: stop.length ? stop : undefined,
  };
}

// The "data: ..." payloads of a Server-Sent Events response, as they arrive.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
    }
  }
}

function busy(on) {
  $("send").disabled = on;
  $("stop-button").disabled = !on;
  $("regenerate").disabled = on || !conversation.some((m) => m.role === "user");
}

// Stream one assistant reply to the conversation as it stands.
async function reply() {
  const reply = {role: "assistant", content: ""};
  const div = bubble("assistant", "");
  const content = div.querySelector(".content");
  div.classList.add("streaming");
  inFlight = new AbortController();
  busy(true);
  setStatus("generating…");
  let finish = null, usage = null;
  try {
    if (model === null) await loadModel();
    const response = await fetch("/v1/chat/completions", {method: "POST", headers: headers(),
      body: JSON.stringify(requestBody()), signal: inFlight.signal});
    if (!response.ok) throw new Error(await errorMessage(response));
    for await (const data of events(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        if (choice.delta && choice.delta.content) {
          reply.content += choice.delta.content;
          content.textContent = reply.content;
          div.scrollIntoView({block: "end"});
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    setStatus(usage ? `${usage.completion_tokens} tokens` + (finish === "length" ? " (max tokens reached)" : "") : "");
  } catch (e) {
    if (e.name === "AbortError") setStatus("stopped");
    else setStatus(e.message, true);
  } finally {
    div.classList.remove("streaming");
    if (reply.content) conversation.push(reply);
    else div.remove();
    inFlight = null;
    busy(false);
  }
}

function send(event) {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || inFlight) return;
  $("input").value = "";
  conversation.push({role: "user", content: text});
  bubble("user", text);
  reply();
}

function regenerate() {
  if (inFlight) return;
  while (conversation.length && conversation[conversation.length - 1].role === "assistant") conversation.pop();
  if (!conversation.length) return;
  render();
  reply();
}

$("composer").addEventListener("submit", send);
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("stop-button").addEventListener("click", () => inFlight && inFlight.abort());
$("regenerate").addEventListener("click", regenerate);
$("clear").addEventListener("click", () => {
  if (inFlight) inFlight.abort();
  conversation.length = 0;
  render();
  setStatus("");
  busy(false);
});
$("api_key").addEventListener("change", () => loadModel().then(() => setStatus(""), (e) => setStatus(e.message, true)));
loadModel().catch((e) => setStatus(e.message, true));
busy(false);
