// Function Fleet console: the only script, served by the console itself (no CDN, no build).
// Everything from the server is put in the page with textContent, never as HTML.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

// ------------------------------------------------------------------ test console
function fieldFor(name, schema, required) {
  const wrap = el("div", null, { class: "stack" });
  const id = "in-" + name;
  const label = el("label", name + (required ? " *" : ""), { for: id });
  if (schema.description) label.title = schema.description;
  wrap.appendChild(label);
  let input;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  if (Array.isArray(schema.enum)) {
    input = el("select", null, { id });
    input.appendChild(el("option", "", { value: "" }));
    for (const v of schema.enum) input.appendChild(el("option", JSON.stringify(v), { value: JSON.stringify(v) }));
    input.dataset.kind = "json";
  } else if (type === "boolean") {
    input = el("select", null, { id });
    for (const v of ["", "true", "false"]) input.appendChild(el("option", v, { value: v }));
    input.dataset.kind = "json";
  } else if (type === "integer" || type === "number") {
    input = el("input", null, { id, type: "number", step: type === "integer" ? "1" : "any" });
    input.dataset.kind = "number";
  } else if (type === "object" || type === "array" || type === undefined) {
    input = el("textarea", null, { id, rows: "2", placeholder: "JSON" });
    input.dataset.kind = "json";
  } else {
    input = el("input", null, { id });
    input.dataset.kind = "string";
  }
  if (schema.default !== undefined) input.placeholder = "default: " + JSON.stringify(schema.default);
  input.dataset.name = name;
  wrap.appendChild(input);
  return wrap;
}

function formToJson(form, raw) {
  let current = {};
  try { current = JSON.parse(raw.value || "{}"); } catch (e) { current = {}; }
  if (typeof current !== "object" || current === null || Array.isArray(current)) current = {};
  for (const input of form.querySelectorAll("[data-name]")) {
    const name = input.dataset.name;
    const value = input.value.trim();
    if (value === "") { delete current[name]; continue; }
    if (input.dataset.kind === "number") current[name] = Number(value);
    else if (input.dataset.kind === "json") {
      try { current[name] = JSON.parse(value); } catch (e) { current[name] = value; }
    } else current[name] = value;
  }
  raw.value = JSON.stringify(current, null, 2);
}

function showResult(body, status) {
  const box = document.getElementById("run-result");
  box.hidden = false;
  const error = body.error || null;
  document.getElementById("run-status").textContent = body.status || ("HTTP " + status);
  document.getElementById("run-code").textContent = error ? error.code : "";
  document.getElementById("run-duration").textContent =
    body.duration_ms === undefined || body.duration_ms === null ? "–" : body.duration_ms.toFixed(1) + " ms";
  document.getElementById("run-attempt").textContent = body.attempt === undefined ? "–" : String(body.attempt);
  const link = document.getElementById("run-link");
  if (body.link) { link.href = body.link; link.hidden = false; } else { link.hidden = true; }
  document.getElementById("run-message").textContent = error ? error.message : "";
  const fields = document.getElementById("run-fields");
  fields.replaceChildren();
  const listed = body.field_errors || (error && error.fields ? Object.entries(error.fields).map(([p, m]) => ({ path: p, message: m })) : []);
  for (const f of listed) {
    const li = el("li");
    li.appendChild(el("code", f.path));
    li.appendChild(document.createTextNode(": " + f.message));
    fields.appendChild(li);
  }
  const output = body.status === "completed" ? body.output : (error && error.details !== undefined ? error.details : null);
  document.getElementById("run-output").textContent = output === null || output === undefined ? "" : JSON.stringify(output, null, 2);
}

function setUpTestConsole() {
  const root = document.getElementById("test-console");
  if (!root) return;
  const raw = document.getElementById("run-input");
  const form = document.getElementById("schema-form");
  let schema = {};
  try { schema = JSON.parse(document.getElementById("input-schema").textContent) || {}; } catch (e) { schema = {}; }
  const required = new Set(schema.required || []);
  const props = schema.properties || {};
  for (const [name, sub] of Object.entries(props)) form.appendChild(fieldFor(name, sub || {}, required.has(name)));
  if (!Object.keys(props).length) form.appendChild(el("p", "No fields declared: write the input as JSON.", { class: "muted" }));
  form.addEventListener("input", () => formToJson(form, raw));
  form.addEventListener("change", () => formToJson(form, raw));
  document.getElementById("run").addEventListener("click", async () => {
    let input, context = null;
    try { input = JSON.parse(raw.value || "{}"); } catch (e) {
      showResult({ status: "not sent", error: { code: "invalid_json", message: "the input is not valid JSON: " + e.message } }, 0);
      return;
    }
    const ctxText = document.getElementById("run-context").value.trim();
    if (ctxText) {
      try { context = JSON.parse(ctxText); } catch (e) {
        showResult({ status: "not sent", error: { code: "invalid_json", message: "the context is not valid JSON: " + e.message } }, 0);
        return;
      }
    }
    const button = document.getElementById("run");
    button.disabled = true;
    button.textContent = "Running…";
    try {
      const response = await fetch(root.dataset.run, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
        body: JSON.stringify({ input, context, timeout: Number(document.getElementById("run-timeout").value) || 30 }),
      });
      showResult(await response.json(), response.status);
    } catch (e) {
      showResult({ status: "not sent", error: { code: "network", message: String(e) } }, 0);
    } finally {
      button.disabled = false;
      button.textContent = "Run";
    }
  });
}

// ------------------------------------------------------------------ fleet, live
function cell(value) { return value === null || value === undefined ? "–" : value; }
function ms(value) { return value === null || value === undefined ? "–" : (value >= 10 ? value.toFixed(0) : value.toFixed(1)) + " ms"; }

function setUpFleetPoll() {
  const table = document.getElementById("fleet");
  if (!table) return;
  const body = table.querySelector("tbody");
  const at = document.getElementById("fleet-at");
  async function refresh() {
    try {
      const response = await fetch(table.dataset.poll, { credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const doc = await response.json();
      const rows = doc.domains.map((d) => {
        const tr = el("tr");
        const p = d.processes;
        for (const v of [d.name, cell(d.lag), cell(d.pending), cell(d.dead_letters),
          `${p.current} / ${cell(p.desired)} (${p.min}–${p.max})`, d.executions_per_s, ms(d.p50_ms), ms(d.p99_ms),
          d.last_scale_event ? d.last_scale_event.reason : "–"]) tr.appendChild(el("td", v));
        return tr;
      });
      body.replaceChildren(...rows);
      at.textContent = "Updated " + new Date(doc.fleet.at * 1000).toLocaleTimeString();
    } catch (e) {
      at.textContent = "Refresh failed: " + e.message;
    }
  }
  setInterval(refresh, 2000);
}

function setUpConfirmations() {
  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpTestConsole();
  setUpFleetPoll();
  setUpConfirmations();
});
