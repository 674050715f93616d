// Shared helpers of the dashboard pages (no framework, no CDN: everything ships with the package).
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const PALETTE = ["#1f77d0", "#f0a202", "#2e9d4f", "#d64541", "#8e6bbf", "#17a2a8", "#e377c2", "#7f7f7f", "#bcbd22", "#8c564b", "#ff7f0e", "#393b79", "#637939", "#9c9ede"];
const channelColour = (() => {
  const known = {};
  return (ch) => (known[ch] ??= PALETTE[Object.keys(known).length % PALETTE.length]);
})();
function timeOf(iso) {
  const d = new Date(iso);
  return d.toLocaleString("en-GB", {timeZone: "Asia/Jakarta", hour: "2-digit", minute: "2-digit", second: "2-digit", day: "2-digit", month: "short"});
}
function badge(status, colours) {
  const c = (colours && colours[status]) || "#7a8590";
  return `<span class="badge" style="background:${c}">${esc(status)}</span>`;
}
function stackedBar(statuses, colours, max) {
  const total = Object.values(statuses).reduce((a, b) => a + b, 0);
  const order = Object.keys(colours).concat(Object.keys(statuses).filter((s) => !(s in colours)));
  const parts = order.filter((s) => statuses[s]).map((s) =>
    `<i style="width:${(100 * statuses[s]) / max}%;background:${colours[s] || "#7a8590"}" title="${esc(s)}: ${statuses[s]}"></i>`);
  return `<span class="stack">${parts.join("")}</span><b class="n">${fmt(total)}</b>`;
}
function live(on, text) {
  const el = $("#live");
  if (!el) return;
  el.classList.toggle("off", !on);
  $("#live-text").textContent = text;
}
function subscribe(onSnapshot) {
  let es;
  const connect = () => {
    es = new EventSource("/events");
    es.addEventListener("snapshot", (e) => {
      const snap = JSON.parse(e.data);
      live(true, "live · " + timeOf(snap.generated_at));
      onSnapshot(snap);
    });
    es.onerror = () => live(false, "reconnecting…");
  };
  connect();
}
