// styleship playground: plain JavaScript, no dependencies. It asks the page's server
// (styleship/serve/ui.py) for the served models, and sends each stylization to
// /api/stylize, which forwards it to Triton with styleship's client.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { catalogue: null, inputName: "photo" };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

function currentModel() {
  return state.catalogue.models.find((m) => m.name === $("model").value);
}

function fillStyles() {
  const model = currentModel();
  const select = $("style");
  select.replaceChildren();
  $("style-box").hidden = !model.takes_style;
  $("engine").textContent = `${model.backend} · ${model.precision}`;
  if (model.styles.length) {
    const bank = document.createElement("optgroup");
    bank.label = "the model's style bank";
    model.styles.forEach((s) => bank.appendChild(option(`bank:${s}`, s)));
    select.appendChild(bank);
  }
  if (model.uploads) {
    if (state.catalogue.paintings.length) {
      const paintings = document.createElement("optgroup");
      paintings.label = "sample paintings";
      state.catalogue.paintings.forEach((p) => paintings.appendChild(option(`painting:${p}`, p)));
      select.appendChild(paintings);
    }
    select.appendChild(option("upload", "upload a painting…"));
  }
  $("style-file-label").hidden = !model.uploads;
}

function showInput(src, name) {
  state.inputName = name;
  $("input-view").src = src;
  $("input-view").alt = `input: ${name}`;
}

$("input-view").addEventListener("load", () => {
  const img = $("input-view");
  $("input-caption").textContent = `input: ${state.inputName} (${img.naturalWidth}×${img.naturalHeight})`;
});

$("sample").addEventListener("change", () => {
  const name = $("sample").value;
  if (!name) return;
  $("content-file").value = "";
  showInput(`samples/${encodeURIComponent(name)}`, name);
});

$("content-file").addEventListener("change", () => {
  const file = $("content-file").files[0];
  if (!file) return;
  $("sample").value = "";
  showInput(URL.createObjectURL(file), file.name);
});

$("style-file").addEventListener("change", () => {
  if ($("style-file").files.length) $("style").value = "upload";
});

$("alpha").addEventListener("input", () => {
  $("alpha-value").textContent = Number($("alpha").value).toFixed(2);
});

$("model").addEventListener("change", fillStyles);

function tooBig(file) {
  const limit = state.catalogue.max_upload_mb;
  return file && file.size > limit * 1024 * 1024
    ? `${file.name} is ${(file.size / 1048576).toFixed(1)} MB, over the ${limit} MB upload limit`
    : "";
}

async function stylize(event) {
  event.preventDefault();
  showError("");
  const form = new FormData();
  const content = $("content-file").files[0];
  const painting = $("style-file").files[0];
  form.append("model", $("model").value);
  if (content) form.append("content", content);
  else form.append("sample", $("sample").value);
  form.append("style", $("style").value);
  if ($("style").value === "upload" && painting) form.append("style_file", painting);
  form.append("alpha", $("alpha").value);
  form.append("preserve_color", $("preserve-color").checked ? "1" : "");
  form.append("format", "jpg");
  const problem = tooBig(content) || ($("style").value === "upload" ? tooBig(painting) : "");
  if (problem) return showError(problem);

  $("run").disabled = true;
  $("busy").hidden = false;
  try {
    const response = await fetch("api/stylize", { method: "POST", body: form });
    const text = await response.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = { error: `HTTP ${response.status}: ${text.slice(0, 200)}` };
    }
    if (!response.ok || body.error) throw new Error(body.error || `HTTP ${response.status}`);
    showResult(body);
  } catch (err) {
    showError(err.message || String(err));
  } finally {
    $("run").disabled = false;
    $("busy").hidden = true;
  }
}

function showResult(body) {
  const url = `data:${body.mime};base64,${body.image}`;
  const result = $("result");
  result.onload = () => {
    $("result-caption").textContent = `result (${result.naturalWidth}×${result.naturalHeight})`;
  };
  result.src = url;
  result.alt = `stylized ${state.inputName}`;
  const upload = body.style_ms == null ? "" : ` + style upload ${Math.round(body.style_ms)} ms`;
  $("latency").textContent = `latency ${Math.round(body.latency_ms)} ms${upload}`;
  $("backend").textContent = `${body.model} on ${body.backend} · ${body.precision}`;
  const stem = state.inputName.replace(/\.[^.]*$/, "");
  const link = $("download");
  link.href = url;
  link.download = `${stem}_stylized.${body.mime === "image/png" ? "png" : "jpg"}`;
  link.hidden = false;
}

$("controls").addEventListener("submit", stylize);

async function load() {
  try {
    const response = await fetch("api/models");
    state.catalogue = await response.json();
  } catch (err) {
    return showError(`cannot reach the playground server: ${err.message || err}`);
  }
  state.catalogue.models.forEach((m) => $("model").appendChild(option(m.name, m.name)));
  state.catalogue.samples.forEach((s) => $("sample").appendChild(option(s, s)));
  fillStyles();
  if (state.catalogue.samples.length) {
    $("sample").value = state.catalogue.samples[0];
    $("sample").dispatchEvent(new Event("change"));
  }
  document.body.dataset.ready = "1";
}

load();
