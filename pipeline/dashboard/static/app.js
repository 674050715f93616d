// The operations page: map drawn once from /api/map, everything else re-rendered on each SSE snapshot.
"use strict";
let MAP = null;
let LAST = null;

async function loadMap() {
  const m = await (await fetch("/api/map")).json();
  const paths = m.areas.map((a) =>
    `<path class="kel" data-code="${a.code}" data-name="${esc(a.name)}" data-kec="${esc(a.kecamatan)}" d="${a.d}"></path>`).join("");
  $("#map").innerHTML = `<svg viewBox="0 0 ${m.width} ${m.height}" role="img" aria-label="Jakarta kelurahan map">
    <g class="areas">${paths}</g><g class="points"></g></svg>`;
  MAP = {};
  for (const p of $("#map").querySelectorAll("path.kel")) MAP[p.dataset.code] = p;
  $("#map svg").addEventListener("mousemove", (e) => {
    const p = e.target.closest("path.kel");
    $("#map-hover").textContent = p ? `${p.dataset.name}, Kec. ${p.dataset.kec}: ${p.dataset.count || 0} today${p.dataset.surge ? " · " + p.dataset.surge : ""}` : "\u00a0";
  });
  if (LAST) renderMap(LAST);
}

function renderMap(s) {
  if (!MAP || !s.map) return;
  const counts = s.map.kelurahan || {};
  const max = Math.max(1, ...Object.values(counts));
  for (const [code, path] of Object.entries(MAP)) {
    const n = counts[code] || 0;
    path.dataset.count = n;
    path.style.fill = n ? `rgba(214, 69, 65, ${0.18 + 0.72 * (n / max)})` : "";
  }
  const open = (s.surges || []).filter((x) => x.state !== "closed");
  for (const [code, path] of Object.entries(MAP)) {
    const hit = open.find((x) => code === x.code || code.startsWith(x.code + "."));
    path.classList.toggle("surge", Boolean(hit));
    path.dataset.surge = hit ? `${hit.category} surge (${hit.state})` : "";
  }
  $("#map g.points").innerHTML = (s.map.points || []).map((p) =>
    `<a href="/report/${p.id}"><circle cx="${p.x}" cy="${p.y}" r="5" style="fill:${(s.colours || {})[p.s] || "#333"}"><title>${esc(p.c || "uncategorised")} · ${esc(p.s)}</title></circle></a>`).join("");
}

function renderIntake(s) {
  const {buckets, series} = s.intake || {buckets: [], series: {}};
  const channels = Object.keys(series).sort();
  const totals = buckets.map((_, i) => channels.reduce((a, c) => a + series[c][i], 0));
  const max = Math.max(1, ...totals);
  const W = 900, H = 160, bw = W / Math.max(buckets.length, 1);
  let bars = "";
  buckets.forEach((ts, i) => {
    let y = H;
    for (const c of channels) {
      const v = series[c][i];
      if (!v) continue;
      const h = (v / max) * (H - 10);
      y -= h;
      bars += `<rect x="${i * bw + 1}" y="${y}" width="${bw - 2}" height="${h}" fill="${channelColour(c)}"><title>${esc(c)}: ${v} at ${new Date(ts * 1000).toLocaleTimeString("en-GB", {timeZone: "Asia/Jakarta"})}</title></rect>`;
    }
  });
  const ticks = buckets.filter((_, i) => i % 10 === 0).map((ts) => {
    const i = buckets.indexOf(ts);
    return `<text x="${i * bw}" y="${H + 14}">${new Date(ts * 1000).toLocaleTimeString("en-GB", {timeZone: "Asia/Jakarta", hour: "2-digit", minute: "2-digit"})}</text>`;
  }).join("");
  $("#intake-chart").innerHTML = `<svg viewBox="0 -4 ${W} ${H + 22}" preserveAspectRatio="none"><line x1="0" x2="${W}" y1="${H}" y2="${H}" class="axis"/>${bars}${ticks}<text x="${W}" y="8" text-anchor="end" class="max">max ${max}/min</text></svg>`;
  $("#intake-legend").innerHTML = channels.map((c) => `<span><i style="background:${channelColour(c)}"></i>${esc(c)}</span>`).join("") || '<span class="muted">no reports in the last hour</span>';
}

function renderSurges(s) {
  const rows = s.surges || [];
  $("#surges-card").classList.toggle("alarm", rows.some((x) => x.state !== "closed"));
  $("#surges tbody").innerHTML = rows.map((x) =>
    `<tr data-surge="${esc(x.surge_id)}" class="surge-${esc(x.state)}" title="${esc(x.surge_id)}"><td><span class="badge surge-state">${esc(x.state)}</span></td><td>${esc(x.category)}</td><td>${esc(x.place || x.code)}${x.places.length && x.level !== "kelurahan" ? `<br><small>${x.places.map(esc).join(", ")}</small>` : ""}</td><td class="num"><b>${fmt(x.count)}</b> in ${esc(x.window || "")}<br><small>${fmt(x.report_count)} in all</small></td><td class="num">${Number(x.expected).toFixed(2)}</td><td class="num">${Number(x.score).toFixed(1)}</td><td>${timeOf(x.opened_at)}</td><td><small>${x.notify.map(esc).join(", ")}</small></td></tr>`).join("") || '<tr><td class="muted" colspan="8">no surges</td></tr>';
}

function renderUndelivered(s) {
  const u = s.undelivered || {total: 0, by_destination: {}, latest: []};
  $("#undelivered-total").textContent = fmt(u.total);
  $("#undelivered-card").classList.toggle("alarm", u.total > 0);
  $("#undelivered-by").innerHTML = Object.entries(u.by_destination).map(([d, n]) => `<span>${esc(d)}: <b>${fmt(n)}</b></span>`).join("");
  $("#undelivered tbody").innerHTML = u.latest.map((x) =>
    `<tr><td>${esc(x.tracking_number)}</td><td>${esc(x.destination)}</td><td>${esc(x.kind)}${x.to_status ? " " + esc(x.to_status) : ""}</td><td class="num">${fmt(x.attempts)}</td><td><small>${esc(x.error)}</small></td><td>${timeOf(x.created_at)}</td></tr>`).join("") || '<tr><td class="muted" colspan="6">nothing undelivered</td></tr>';
}

function renderModels(s) {
  const m = s.models;
  if (!m) { $("#models tbody").innerHTML = '<tr><td class="muted" colspan="6">no model registry yet</td></tr>'; return; }
  const pct = (x) => x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%";
  const rows = [`<tr><td>live</td><td>${esc(m.live.model)}</td><td>${m.live.since ? timeOf(m.live.since) : "built in"}</td><td class="num">${fmt(m.live.judged)} <small>(${esc(m.window)})</small></td><td class="num">${pct(m.live.accuracy)}</td><td></td></tr>`];
  if (m.shadow) {
    rows.push(`<tr><td>shadow</td><td>${esc(m.shadow.model)}</td><td>${timeOf(m.shadow.since)}</td><td class="num">${fmt(m.shadow.labelled)} of ${fmt(m.shadow.decisions)}</td><td class="num">${pct(m.shadow.accuracy)} <small>(live ${pct(m.shadow.live_accuracy)})</small></td><td class="num">${pct(m.shadow.agreement)}</td></tr>`);
  }
  $("#models tbody").innerHTML = rows.join("");
}

function render(s) {
  LAST = s;
  const t = s.totals || {};
  $("#kpi-today").textContent = fmt(t.today);
  $("#kpi-open").textContent = fmt(t.open);
  $("#kpi-stored").textContent = fmt(t.stored);
  const lag = s.lag || {};
  $("#kpi-lag").textContent = lag.total === null || lag.total === undefined ? "?" : fmt(lag.total);
  $("#kpi-lag-box").classList.toggle("warn", (lag.total || 0) > 1000);
  const dl = s.dead_letters || {};
  $("#kpi-dead").textContent = fmt(dl.total);
  $("#kpi-dead-today").textContent = fmt(dl.today);
  $("#kpi-dead-box").classList.toggle("warn", (dl.today || 0) > 0);
  const md = s.media || {};
  $("#kpi-media-failed").textContent = fmt((md.failed || 0) + (md.refused || 0));
  $("#kpi-media-stored").textContent = fmt(md.stored || 0);
  $("#kpi-media-pending").textContent = fmt(md.pending || 0);
  $("#kpi-media-box").classList.toggle("warn", (md.failed || 0) > 0);
  $("#kpi-media-box").title = (md.not_kept || []).map((m) => `${m.state} ${m.code}: ${m.reason}`).join("\n");

  renderIntake(s);
  $("#channels-today tbody").innerHTML = Object.entries(s.channels_today || {}).map(([c, n]) =>
    `<tr data-channel="${esc(c)}"><td><i class="dot" style="background:${channelColour(c)}"></i>${esc(c)}</td><td class="num">${fmt(n)}</td></tr>`).join("") || '<tr><td class="muted">nothing yet today</td></tr>';

  const colours = s.colours || {};
  $("#status-legend").innerHTML = Object.entries(colours).map(([k, c]) => `<span><i style="background:${c}"></i>${esc(k)}</span>`).join("");
  const agencies = s.open_by_agency || [];
  const amax = Math.max(1, ...agencies.map((a) => a.total));
  $("#by-agency").innerHTML = agencies.map((a) =>
    `<div class="bar" data-agency="${esc(a.agency)}"><span class="label" title="${esc(a.agency)}">${esc(a.agency)}</span>${stackedBar(a.statuses, colours, amax)}</div>`).join("") || '<p class="muted">no open reports</p>';
  const regions = s.open_by_region || [];
  const rmax = Math.max(1, ...regions.map((r) => r.total));
  let lastKota = null;
  $("#by-region").innerHTML = regions.map((r) => {
    const head = r.kota !== lastKota ? `<h3>${esc(r.kota)}</h3>` : "";
    lastKota = r.kota;
    return `${head}<div class="bar"><span class="label">Kec. ${esc(r.kecamatan)}</span>${stackedBar(r.statuses, colours, rmax)}</div>`;
  }).join("") || '<p class="muted">no open reports</p>';

  const cases = s.top_cases || [];
  $("#cases").innerHTML = cases.map((c) =>
    `<li><b class="support">${fmt(c.supporters)}</b><div><div>${esc(c.text || c.case_id)}</div><small>${esc(c.category || "uncategorised")} · ${esc(c.kelurahan || "?")} · ${c.status ? badge(c.status, colours) : ""}</small></div></li>`).join("") || '<li class="muted">no case has more than one report yet</li>';

  $("#dead-codes").innerHTML = Object.entries(dl.by_code || {}).map(([k, n]) => `<span class="chip">${esc(k)} <b>${n}</b></span>`).join("") || '<span class="muted">none</span>';
  $("#dead-recent tbody").innerHTML = (dl.recent || []).map((d) =>
    `<tr><td>${timeOf(d.failed_at)}</td><td>${esc(d.channel || "-")}/${esc(d.stage)}</td><td><code>${esc(d.code)}</code></td><td class="reason">${esc(d.reason)}</td></tr>`).join("");

  $("#lag-group").textContent = lag.error ? `(${lag.error})` : "";
  const parts = (lag.partitions || []).filter((p) => p.lag > 0 || p.end > 0);
  $("#lag tbody").innerHTML = parts.map((p) =>
    `<tr class="${p.lag ? "warn" : ""}"><td>${esc(p.topic)}</td><td class="num">${p.partition}</td><td class="num">${fmt(p.end)}</td><td class="num"><b>${fmt(p.lag)}</b></td></tr>`).join("") || '<tr><td class="muted">no traffic yet</td></tr>';

  $("#recent tbody").innerHTML = (s.recent || []).map((r) =>
    `<tr data-report="${r.report_id}"><td>${timeOf(r.received_at)}</td><td><a href="/report/${r.report_id}">${esc(r.tracking_number || r.report_id.slice(0, 8))}</a></td><td>${esc(r.channel)}</td><td>${esc(r.category || "–")}</td><td>${esc(r.agency || "–")}</td><td>${esc(r.kelurahan || "–")}</td><td>${badge(r.status, colours)}</td><td class="text">${esc(r.text)}</td></tr>`).join("");
  renderSurges(s);
  renderUndelivered(s);
  renderModels(s);
  renderMap(s);
  const errs = Object.entries(s.errors || {});
  $("#errors").innerHTML = errs.map(([k, v]) => `<p>${esc(k)}: ${esc(v)}</p>`).join("");
}

loadMap();
fetch("/api/snapshot").then((r) => r.json()).then(render).catch(() => {});
subscribe(render);
