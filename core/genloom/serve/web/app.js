// The page of `genloom serve`: pick a model, set its options, see its media. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
const promptHint = $("prompt").placeholder;
let conversation = []; // the chat so far, [{role, content}], sent whole with each new message

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body.error) return `${response.status}: ${body.error.message}`;
    return `${response.status}: ${JSON.stringify(body)}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearResult() {
  $("error").hidden = true;
  $("outputs").replaceChildren();
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    $("status").textContent = "could not list the models";
    showError(await errorText(response));
    return;
  }
  models = (await response.json()).data;
  $("model").replaceChildren(...models.map((m) => new Option(`${m.id} (${m.media_type})`, m.id)));
  $("status").textContent = `${models.length} model${models.length === 1 ? "" : "s"} served`;
  showOptions();
  newConversation();
}

function current() {
  return models.find((m) => m.id === $("model").value);
}

function showOptions() {
  const model = current();
  const box = $("options");
  box.replaceChildren(Object.assign(document.createElement("legend"), { textContent: "Sampling options" }));
  if (!model) return;
  $("model-info").textContent =
    `${model.generator}, step ${model.step}` + (model.streaming ? ", streams as it generates" : "") +
    (model.chat ? ", chats" : "");
  $("chat-box").hidden = !model.chat;
  for (const [name, spec] of Object.entries(model.options)) {
    const label = document.createElement("label");
    label.textContent = `${name} `;
    const input = document.createElement("input");
    input.name = name;
    input.dataset.option = spec.type;
    input.placeholder = spec.default === null ? `${spec.type} (default none)` : `default ${spec.default}`;
    if (/\b(int|float)\b/.test(spec.type)) {
      input.type = "number";
      input.step = /\bint\b/.test(spec.type) && !/\bfloat\b/.test(spec.type) ? "1" : "any";
    }
    if (spec.type === "bool") input.placeholder = "true or false (default " + spec.default + ")";
    label.append(input);
    box.append(label);
  }
}

function readOptions() {
  const options = {};
  for (const input of $("options").querySelectorAll("input")) {
    const raw = input.value.trim();
    if (raw === "") continue;
    const type = input.dataset.option;
    if (type === "bool") options[input.name] = raw === "true";
    else if (/\b(int|float)\b/.test(type)) options[input.name] = Number(raw);
    else options[input.name] = raw;
  }
  return options;
}

function request() {
  const body = { n: Number($("n").value || 1), ...readOptions() };
  const prompt = $("prompt").value;
  if (prompt !== "") body.prompt = prompt;
  if ($("label").value !== "") body.label = Number($("label").value);
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  return body;
}

async function readEvents(response, onChunk) {
  // Server-sent events, one token (or a few) per event, until [DONE] (true) or an error (false).
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      if (data === "[DONE]") return true;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        showError(chunk.error.message);
        return false;
      }
      onChunk(chunk);
    }
  }
}

function textPayload(model, body) {
  // The page's max_new_tokens is the OpenAI routes' max_tokens.
  const payload = { model: model.id, stream: true, max_tokens: 200, ...body };
  if ("max_new_tokens" in payload) {
    payload.max_tokens = payload.max_new_tokens;
    delete payload.max_new_tokens;
  }
  return payload;
}

async function streamText(model, body) {
  const payload = textPayload(model, body);
  const response = await fetch("/v1/completions", { method: "POST", headers: headers(), body: JSON.stringify(payload) });
  if (!response.ok) return showError(await errorText(response));
  const boxes = [];
  for (let i = 0; i < payload.n; i++) {
    const pre = Object.assign(document.createElement("pre"), { className: "text" });
    pre.dataset.row = i;
    pre.textContent = body.prompt || "";
    boxes.push(pre);
  }
  $("outputs").append(...boxes);
  await readEvents(response, (chunk) => {
    for (const choice of chunk.choices) boxes[choice.index].textContent += choice.text;
  });
}

function showTurn(role, content) {
  const turn = Object.assign(document.createElement("div"), { className: `turn ${role}` });
  turn.append(Object.assign(document.createElement("div"), { className: "muted", textContent: role }));
  const text = Object.assign(document.createElement("pre"), { className: "text", textContent: content });
  turn.append(text);
  $("outputs").append(turn);
  return text;
}

async function streamChat(model, body) {
  // Chat completions: the conversation so far and the new message; the answer streams in as deltas.
  const message = { role: "user", content: body.prompt || "" };
  const payload = { ...textPayload(model, body), n: 1, messages: [...conversation, message] };
  delete payload.prompt;
  delete payload.label;
  const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(payload) });
  if (!response.ok) return showError(await errorText(response));
  showTurn("user", message.content);
  const reply = showTurn("assistant", "");
  const finished = await readEvents(response, (chunk) => {
    for (const choice of chunk.choices) reply.textContent += choice.delta.content || "";
  });
  if (!finished) return;
  conversation.push(message, { role: "assistant", content: reply.textContent });
  $("prompt").value = "";
}

function chatting() {
  const model = current();
  return Boolean(model && model.chat && $("chat").checked);
}

function newConversation() {
  conversation = [];
  clearResult();
  const chat = chatting();
  $("prompt-name").textContent = chat ? "Your message" : "Prompt";
  $("prompt").placeholder = chat ? "What you say to the model" : promptHint;
  $("n").disabled = chat; // one answer carries the conversation on
}

function dataUrl(file) {
  return `data:${file.content_type};base64,${file.b64_json}`;
}

async function generateMedia(model, body) {
  const response = await fetch(`/v1/generate/${encodeURIComponent(model.id)}`,
    { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) return showError(await errorText(response));
  const result = await response.json();
  const grid = Object.assign(document.createElement("div"), { className: "grid" });
  for (const file of result.outputs) {
    if (file.content_type.startsWith("image/")) {
      grid.append(Object.assign(document.createElement("img"), { src: dataUrl(file), alt: file.name, title: file.name }));
    } else if (file.content_type.startsWith("audio/")) {
      const clip = Object.assign(document.createElement("div"), { className: "clip" });
      clip.append(Object.assign(document.createElement("div"), { className: "muted", textContent: file.name }));
      clip.append(Object.assign(document.createElement("audio"), { src: dataUrl(file), controls: true }));
      $("outputs").append(clip);
    } else if (file.content_type.startsWith("text/")) {
      $("outputs").append(Object.assign(document.createElement("pre"), { className: "text", textContent: file.text }));
    } else {
      $("outputs").append(Object.assign(document.createElement("a"), { href: dataUrl(file), download: file.name, textContent: file.name }));
    }
  }
  if (grid.childElementCount) $("outputs").append(grid);
  const gallery = Object.assign(document.createElement("div"), { className: "gallery" });
  for (const file of result.gallery) {
    if (file.content_type.startsWith("image/") && !grid.childElementCount) {
      // A sheet beside sound (its spectrograms): pictures already in the grid need no sheet.
      gallery.append(Object.assign(document.createElement("img"), { src: dataUrl(file), alt: file.name, title: file.name }));
    }
  }
  if (gallery.childElementCount) $("outputs").append(gallery);
  $("status").textContent = `seed ${result.seed}`;
}

async function generate(event) {
  event.preventDefault();
  const model = current();
  if (!model) return;
  const chat = chatting();
  if (chat) $("error").hidden = true; // the conversation stays on the page
  else clearResult();
  $("generate").disabled = true;
  try {
    const body = request();
    if (chat) await streamChat(model, body);
    else if (model.streaming) await streamText(model, body);
    else await generateMedia(model, body);
  } catch (err) {
    showError(String(err));
  } finally {
    $("generate").disabled = false;
  }
}

$("model").addEventListener("change", () => { showOptions(); newConversation(); });
$("chat").addEventListener("change", newConversation);
$("new-chat").addEventListener("click", newConversation);
$("form").addEventListener("submit", generate);
$("api-key").addEventListener("change", loadModels);
loadModels();
