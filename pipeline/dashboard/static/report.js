// One report's path: channel → dedup → category → route → case → status history, with the reasons.
"use strict";
const ID = decodeURIComponent(location.pathname.split("/").pop());

function step(cls, title, body) {
  return `<li class="${cls}"><h3>${title}</h3><div>${body}</div></li>`;
}

async function load() {
  const resp = await fetch(`/api/report/${encodeURIComponent(ID)}`);
  if (resp.status === 404) {
    $("#title").textContent = ID;
    $("#text").textContent = "No such report in the CRM store (yet): it may still be in the pipeline, or on the dead-letter topic.";
    return;
  }
  const data = await resp.json();
  const r = data.report, c = data.colours;
  $("#title").textContent = r.tracking_number || r.report_id;
  $("#text").textContent = r.text_original;
  $("#summary").innerHTML = `${badge(r.status, c)} report id <code>${esc(r.report_id)}</code>`;
  const conf = r.confidence === null || r.confidence === undefined ? "–" : Math.round(r.confidence * 100) + "%";
  const reg = r.region || {};
  const steps = [
    step("channel", `1 · Channel <b>${esc(r.channel)}</b>`,
      `received ${timeOf(r.received_at)}${r.source_at ? `, sent ${timeOf(r.source_at)}` : ""}<br>provider id <code>${esc(r.provider_id)}</code>` +
      (r.raw_ref ? `<br>raw payload on <code>${esc(r.raw_ref.topic)}</code> (${fmt(r.raw_ref.size)} bytes)` : "")),
    step("dedup", "2 · Deduplication <b>passed</b>",
      `first time this report id was seen: redeliveries of the same message map to the same id and are dropped ` +
      `(remembered ${data.dedup.ttl_days} days); the same sender with the same text within ${data.dedup.text_window_s} s is dropped too.`),
    step("category", `3 · Category <b>${esc(r.category || "none")}</b> <small>${conf}</small>`,
      `classifier <code>${esc(r.classifier || "–")}</code>` + (r.category_hint ? `; the citizen picked “${esc(r.category_hint)}”` : "")),
    step("route", `4 · Route <b>${esc(r.agency || (r.routed_to === "triage" ? "manual triage" : r.routed_to || "–"))}</b>`,
      `${esc(r.route_reason || "")}` + (r.agency_unit ? `<br>unit ${esc(r.agency_unit)}` : "") +
      `<br>location: ${esc([reg.kelurahan && "Kel. " + reg.kelurahan, reg.kecamatan && "Kec. " + reg.kecamatan, reg.kota].filter(Boolean).join(", ") || r.address || "unknown")}` +
      (r.expected_by ? `<br>expected by ${timeOf(r.expected_by)}` : "")),
  ];
  if (data.case) {
    steps.push(step("case", `5 · Case <b>${fmt(data.case.support_count)} supporter(s)</b>`, `<code>${esc(data.case.case_id)}</code>`));
    showCase(data.case, r);
  }
  const hist = data.history || [];
  const rows = hist.length
    ? hist.map((h) => `<tr><td>${timeOf(h.changed_at)}</td><td>${h.from_status ? badge(h.from_status, c) + " → " : ""}${badge(h.to_status, c)}</td><td>${esc(h.actor)}</td><td>${esc(h.note || "")}</td></tr>`).join("")
    : `<tr><td>${timeOf(r.stored_at || r.received_at)}</td><td>${badge(r.status, c)}</td><td>pipeline</td><td>stored in the CRM store</td></tr>`;
  steps.push(step("status", "Status history", `<table class="compact">${rows}</table>`));
  const media = data.media || [];
  if (media.length) {
    const cell = (m) => m.state === "stored"
      ? `<figure class="thumb"><img src="${esc(m.thumbnail)}" alt="${esc(m.kind)} photo ${m.idx + 1}" loading="lazy"><figcaption>${esc(m.kind === "after" ? "after · " + (m.actor || "") : "photo " + (m.idx + 1))}</figcaption></figure>`
      : `<p class="media-${esc(m.state)}"><b>${esc(m.kind)} #${m.idx + 1} ${esc(m.state)}</b>${m.code ? ` <code>${esc(m.code)}</code>` : ""}${m.reason ? `: ${esc(m.reason)}` : ""}${m.state === "pending" ? ` (attempt ${m.attempts + 1})` : ""}</p>`;
    steps.push(step("media", `Photos <b>${media.filter((m) => m.state === "stored").length} of ${media.length} kept</b>`,
      `<div class="thumbs">${media.map(cell).join("")}</div>`));
  }
  if ((data.dead_letters || []).length) {
    steps.push(step("dead", "Dead letters", data.dead_letters.map((d) => `<p><code>${esc(d.code)}</code> at ${esc(d.stage)}: ${esc(d.reason)}</p>`).join("")));
  }
  $("#path").innerHTML = steps.join("");
}

// The case panel: recurrence, duplicate candidates, and an officer's split and merge (issue #23).
let shownCase = "";
function caseLink(id) {
  return `<code>${esc(id)}</code>`;
}
function showCase(k, r) {
  const state = JSON.stringify([k, r.report_id]);
  if (state === shownCase) return; // the page reloads on every live update: keep the officer's input
  shownCase = state;
  $("#case-card").hidden = false;
  const lines = [`case ${caseLink(k.case_id)}: ${fmt(k.support_count)} report(s)`];
  if (k.occurrence > 1 || k.previous_case_id) {
    lines.push(`recurring: occurrence <b>${fmt(k.occurrence)}</b>, after ${caseLink(k.previous_case_id)}`);
  }
  if ((k.next_case_ids || []).length) lines.push(`reported again after it closed: ${k.next_case_ids.map(caseLink).join(", ")}`);
  if (k.closed_reason) lines.push(`closed (${esc(k.closed_reason)})${k.merged_into ? " into " + caseLink(k.merged_into) : ""}`);
  $("#case-info").innerHTML = lines.map((l) => `<p>${l}</p>`).join("");
  const buttons = [];
  if (k.support_count > 1) {
    buttons.push(`<button id="case-split" data-case="${esc(k.case_id)}">Split this report out of its case</button>`);
  }
  for (const other of k.candidates || []) {
    buttons.push(`<button class="case-merge" data-case="${esc(k.case_id)}" data-other="${esc(other)}">Merge ${esc(other)} into this case</button>`);
  }
  $("#case-actions").innerHTML = buttons.length ? buttons.join(" ") : `<p class="muted">no duplicate candidates</p>`;
  const split = $("#case-split");
  if (split) split.onclick = () => correct(split.dataset.case, "split", { report: r.report_id });
  document.querySelectorAll(".case-merge").forEach((b) => {
    b.onclick = () => correct(b.dataset.case, "merge", { other: b.dataset.other });
  });
}
async function correct(caseId, action, body) {
  const key = $("#case-key").value.trim();
  sessionStorage.setItem("crm-officer-key", key);
  const resp = await fetch(`/api/cases/${encodeURIComponent(caseId)}/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-API-Key": key },
    body: JSON.stringify({ ...body, actor: "dashboard" }),
  });
  const data = await resp.json().catch(() => ({}));
  const why = Array.isArray(data) ? data[0].description : data.error;
  $("#case-result").textContent = resp.ok
    ? `${action} done: correction ${data.correction_id}, ${data.pairs} labelled pair(s) recorded`
    : `${action} refused (${resp.status}): ${why || "no reason given"}`;
  shownCase = "";
  load();
}

$("#case-key").value = sessionStorage.getItem("crm-officer-key") || "";
load();
subscribe(() => load());
