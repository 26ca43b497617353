// The nst page. Every string from the server or from a results table goes into the page as text
// (textContent, setAttribute): nothing here parses markup.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, children = []) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
};

const chosen = { content: null, styles: [], paintings: [], mask: null }; // File, Files, {id, label}, File
let config = null;
let poll = null;

// -- tabs ----------------------------------------------------------------------------------------

function showTab(name) {
  for (const tab of ["stylize", "jobs"]) {
    $("view-" + tab).hidden = tab !== name;
    $("tab-" + tab).setAttribute("aria-selected", String(tab === name));
  }
  if (name === "jobs") ready.then(() => config.jobs && loadJobs()).catch(showError);
}
$("tab-stylize").addEventListener("click", () => showTab("stylize"));
$("tab-jobs").addEventListener("click", () => showTab("jobs"));

// -- talking to the server -----------------------------------------------------------------------

async function api(url, options) {
  const response = await fetch(url, options);
  const json = response.headers.get("content-type")?.includes("json");
  const body = json ? await response.json() : null;
  if (!response.ok) {
    const detail = body?.detail;
    throw new Error(typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : response.statusText);
  }
  return body;
}

function showError(error) {
  $("error").textContent = error?.message ?? String(error ?? "");
}

// -- choosing images: file inputs and drag and drop ----------------------------------------------

function acceptDrops(zone, onFiles) {
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const files = [...(event.dataTransfer?.files ?? [])].filter((f) => f.type.startsWith("image/") || !f.type);
    if (files.length) onFiles(files);
  });
}

function setContent(file) {
  chosen.content = file;
  const thumb = $("content-thumb");
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  thumb.src = URL.createObjectURL(file);
  thumb.hidden = false;
  $("drop-content").classList.add("filled");
  $("content-name").textContent = `${file.name} · ${(file.size / 1024).toFixed(0)} kB`;
}

function addStyles(files) {
  for (const file of files) {
    if (chosen.styles.length + chosen.paintings.length >= config.max_styles) {
      showError(new Error(`at most ${config.max_styles} style images`));
      break;
    }
    chosen.styles.push(file);
  }
  renderStyles();
}

function renderStyles() {
  const list = $("style-list");
  for (const img of list.querySelectorAll("img[src^='blob:']")) URL.revokeObjectURL(img.src);
  list.replaceChildren();
  chosen.styles.forEach((file, i) => {
    list.append(el("li", {}, [
      el("img", { src: URL.createObjectURL(file), alt: `style ${file.name}`, title: file.name }),
      el("button", { type: "button", "aria-label": `remove ${file.name}`, text: "×",
        onclick: () => { chosen.styles.splice(i, 1); renderStyles(); } }),
    ]));
  });
  chosen.paintings.forEach((painting, i) => {
    list.append(el("li", {}, [
      el("img", { src: thumbUrl(painting.id, 160), alt: painting.label, title: painting.label }),
      el("button", { type: "button", "aria-label": `remove ${painting.label}`, text: "×",
        onclick: () => { chosen.paintings.splice(i, 1); renderStyles(); markPicks(); } }),
    ]));
  });
  $("style-empty").hidden = chosen.styles.length + chosen.paintings.length > 0;
}

$("content").addEventListener("change", (event) => { if (event.target.files[0]) setContent(event.target.files[0]); });

// The optional mask (README, "Spatial control with masks"): checked by the server as it arrives.
function setMask(file) {
  chosen.mask = file || null;
  const thumb = $("mask-thumb");
  if (thumb.src) URL.revokeObjectURL(thumb.src);
  thumb.hidden = !file;
  if (file) thumb.src = URL.createObjectURL(file); else thumb.removeAttribute("src");
  $("drop-mask").classList.toggle("filled", Boolean(file));
  $("mask-name").textContent = file ? file.name : "";
  $("mask-clear").hidden = !file;
  if (!file) $("mask").value = "";
}
$("mask").addEventListener("change", (event) => setMask(event.target.files[0]));
$("mask-clear").addEventListener("click", () => setMask(null));
acceptDrops($("drop-mask"), (files) => setMask(files[0]));
$("styles").addEventListener("change", (event) => { addStyles([...event.target.files]); event.target.value = ""; });
acceptDrops($("drop-content"), (files) => setContent(files[0]));
acceptDrops($("drop-styles"), addStyles);

// -- the catalogue -------------------------------------------------------------------------------

const thumbUrl = (id, side) => `/api/catalog/image?${new URLSearchParams({ id, side })}`;

async function loadArtists() {
  const { counts } = await api("/api/catalog/paintings");
  for (const artist of counts.filter((a) => a.paintings > 0)) {
    $("artist-pick").add(new Option(`${artist.name} (${artist.paintings})`, artist.name));
  }
}

$("artist-pick").addEventListener("change", async () => {
  const artist = $("artist-pick").value;
  const grid = $("painting-grid");
  grid.replaceChildren();
  if (!artist) return;
  try {
    const { paintings } = await api("/api/catalog/paintings?" + new URLSearchParams({ artist }));
    for (const p of paintings) {
      const label = `${artist} #${p.number}`;
      grid.append(el("button", {
        type: "button", class: "pick", "data-id": p.id, "aria-pressed": "false", title: label,
        onclick: () => togglePainting(p.id, label),
      }, [el("img", { src: thumbUrl(p.id, 96), alt: label, loading: "lazy" })]));
    }
    markPicks();
  } catch (error) { showError(error); }
});

function togglePainting(id, label) {
  const at = chosen.paintings.findIndex((p) => p.id === id);
  if (at >= 0) chosen.paintings.splice(at, 1);
  else if (chosen.styles.length + chosen.paintings.length >= config.max_styles) {
    return showError(new Error(`at most ${config.max_styles} style images`));
  } else chosen.paintings.push({ id, label });
  renderStyles();
  markPicks();
}

function markPicks() {
  const ids = new Set(chosen.paintings.map((p) => p.id));
  for (const button of $("painting-grid").children) {
    button.setAttribute("aria-pressed", String(ids.has(button.dataset.id)));
  }
}

// -- stylize and watch ---------------------------------------------------------------------------

function drawLosses(canvas, points) { // points: [[iteration, loss], ...]; log10 of the loss
  const ratio = window.devicePixelRatio || 1;
  const baseW = +(canvas.dataset.w ||= canvas.width), baseH = +(canvas.dataset.h ||= canvas.height);
  const width = canvas.clientWidth || baseW, height = Math.round(width * baseH / baseW);
  canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pts = points.filter((p) => p[1] > 0).map((p) => [p[0], Math.log10(p[1])]);
  ctx.fillStyle = "#6b6b73"; ctx.font = "11px system-ui, sans-serif";
  if (pts.length < 2) { ctx.fillText("loss curve: appears while it runs", 8, height / 2); return; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const left = 36, right = 8, top = 8, bottom = 18, w = width - left - right, h = height - top - bottom;
  ctx.strokeStyle = "#dcdce2"; ctx.beginPath(); ctx.moveTo(left, top); ctx.lineTo(left, top + h); ctx.lineTo(left + w, top + h); ctx.stroke();
  ctx.strokeStyle = "#3b5bdb"; ctx.lineWidth = 2; ctx.beginPath();
  pts.forEach(([x, y], i) => {
    const px = left + w * (x - x0) / Math.max(1, x1 - x0), py = top + h * (1 - (y - y0) / Math.max(1e-9, y1 - y0));
    if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py);
  });
  ctx.stroke();
  ctx.fillText(y1.toFixed(1), 2, top + 8); ctx.fillText(y0.toFixed(1), 2, top + h);
  ctx.fillText(String(x0), left, height - 4); ctx.fillText(String(x1), left + w - 8 * String(x1).length, height - 4);
}

function resetResult() {
  for (const id of ["preview", "result", "download"]) $(id).hidden = true;
  $("result").removeAttribute("src");
  $("result-empty").hidden = false;
  $("bar").value = 0;
  drawLosses($("losses"), []);
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError(null);
  if (!chosen.content) return showError(new Error("choose a content image first"));
  if (!chosen.styles.length && !chosen.paintings.length) return showError(new Error("add a style image or pick a painting"));
  const data = new FormData();
  data.append("content", chosen.content);
  for (const file of chosen.styles) data.append("styles", file);
  for (const p of chosen.paintings) data.append("paintings", p.id);
  if (chosen.mask) {
    data.append("mask", chosen.mask);
    if ($("mask_regions").value.trim()) data.append("mask_regions", $("mask_regions").value.trim());
    if ($("mask_invert").checked) data.append("mask_invert", "true");
  }
  for (const name of ["preset", "size", "strength", "color", "iterations"]) {
    if ($(name).value !== "") data.append(name, $(name).value);
  }
  resetResult();
  $("go").disabled = true;
  try {
    const { task_id } = await api("/api/stylize", { method: "POST", body: data });
    $("progress").textContent = "queued…";
    clearTimeout(poll);
    watch(task_id, 0);
  } catch (error) { showError(error); $("go").disabled = false; }
});

async function watch(id, shown) {
  let s;
  try { s = await api(`/api/tasks/${encodeURIComponent(id)}`); } catch (error) { showError(error); $("go").disabled = false; return; }
  if (s.iterations) {
    $("bar").max = s.iterations; $("bar").value = s.iteration;
    const last = s.trace?.[s.trace.length - 1];
    $("progress").textContent = `${s.status}: iteration ${s.iteration} of ${s.iterations}` + (last ? ` · loss ${last[3].toExponential(2)}` : "");
  }
  if (s.has_preview && s.iteration !== shown && s.status !== "done") {
    $("preview").src = `/api/tasks/${encodeURIComponent(id)}/preview.png?i=${s.iteration}`;
    $("preview").hidden = false; $("result-empty").hidden = true;
    shown = s.iteration;
  }
  if (s.trace) drawLosses($("losses"), s.trace.map((t) => [t[0], t[3]]));
  if (s.status === "failed") { showError(new Error(s.error)); $("go").disabled = false; $("progress").textContent = "failed"; return; }
  if (s.status !== "done") { poll = setTimeout(() => watch(id, shown), 500); return; }
  $("go").disabled = false;
  $("progress").textContent = `done in ${s.seconds.toFixed(1)} s on ${s.device}`;
  const url = `/api/tasks/${encodeURIComponent(id)}/result.png`;
  $("result").src = url;
  $("result").hidden = false; $("preview").hidden = true; $("result-empty").hidden = true;
  $("download").href = url;
  $("download").setAttribute("download", `nst-${id.slice(0, 8)}.png`);
  $("download").hidden = false;
}

// -- jobs ----------------------------------------------------------------------------------------

let page = 1;
const perPage = 24;
const jobBase = (job, id) => `/api/jobs/${encodeURIComponent(job)}/pairs/${encodeURIComponent(id)}`;

let progress = {}; // job -> its progress, for the jobs that run (GET /api/jobs)

async function loadJobs() {
  const listing = await api("/api/jobs");
  const jobs = listing.jobs;
  progress = listing.progress || {};
  const current = $("job").value;
  $("job").replaceChildren(...jobs.map((j) => new Option(j, j, false, j === current)));
  $("gallery-empty").hidden = jobs.length > 0;
  $("gallery-empty").textContent = jobs.length ? "No pairs match these filters." : "No jobs here yet: run one with nst run.";
  page = 1;
  await loadPairs();
}

function thumb(job, pair, which, side) {
  return el("img", { src: `${jobBase(job, pair.pair_id)}/${which}.png?side=${side}`, alt: which, loading: "lazy" });
}

async function loadPairs() {
  const job = $("job").value;
  if (!job) return;
  const running = progress[job]; // what the job committed so far, as `nst status` says it
  $("job-progress").hidden = !running;
  $("job-progress").textContent = running ? `Running: ${running.text}` : "";
  const q = new URLSearchParams({ page, per_page: perPage });
  if ($("artist").value) q.set("artist", $("artist").value);
  if ($("status").value) q.set("status", $("status").value);
  const r = await api(`/api/jobs/${encodeURIComponent(job)}/pairs?${q}`);
  const pages = Math.max(1, Math.ceil(r.total / perPage));
  if (page > pages) { page = pages; return loadPairs(); }
  const artist = $("artist").value;
  $("artist").replaceChildren(new Option("all", ""), ...r.artists.map((a) => new Option(a, a, false, a === artist)));
  $("page").textContent = `page ${r.page} of ${pages}`;
  $("prev").disabled = page <= 1; $("next").disabled = page >= pages;
  const skipped = r.unreadable_parts.length; // left in place for the job's next run
  $("total").textContent = `${r.total} pairs` +
    (skipped ? ` (${skipped} unreadable results part${skipped > 1 ? "s" : ""} skipped)` : "");
  $("gallery-empty").hidden = r.pairs.length > 0;
  $("gallery").replaceChildren(...r.pairs.map((p) => {
    const done = p.status === "done";
    const images = [thumb(job, p, "content", 128), thumb(job, p, "style", 128),
      done ? thumb(job, p, "result", 128) : el("span", { class: "missing", text: "failed" })];
    const words = [`${p.content_id} × ${p.artist || p.style_id}`, p.status];
    if (p.loss_total != null) words.push(`loss ${p.loss_total.toExponential(2)}`);
    if (p.worst_gram_error != null) words.push(`worst Gram error ${p.worst_gram_error.toPrecision(2)}`);
    if (p.poor_transfer) words.push("poor transfer");
    if (p.error) words.push(p.error);
    return el("button", { type: "button", class: "card" + (done ? "" : " failed") + (p.poor_transfer ? " poor" : ""), onclick: () => showPair(job, p.pair_id) },
      [el("span", { class: "thumbs" }, images), el("span", { class: "caption", text: words.join(" · ") })]);
  }));
}

// The row's relative errors (README, "Quality"): content, then each style layer's Gram error.
function qualityWords(p) {
  const errors = Object.keys(p).filter((k) => k === "content_error" || k.startsWith("gram_error_"))
    .filter((k) => p[k] != null).map((k) => `${k.replace("gram_error_", "")} ${p[k].toPrecision(2)}`);
  if (!errors.length) return [];
  return [`errors: ${errors.join(", ")}`].concat(p.poor_transfer ? ["poor transfer: the painting's statistics did not take"] : []);
}

async function showPair(job, id) {
  try {
    const p = await api(jobBase(job, id));
    $("detail-title").textContent = `${p.content_id} × ${p.artist || p.style_id}`;
    const which = ["content", "style"].concat(p.status === "done" ? ["result"] : []);
    $("detail-images").replaceChildren(...which.map((w) => thumb(job, p, w, 300)));
    const fmt = (v, f) => (v == null ? "–" : f(v));
    $("detail-info").textContent = [p.status, `${fmt(p.width, String)}×${fmt(p.height, String)} px`,
      `${fmt(p.iterations, String)} iterations`, `${fmt(p.seconds, (v) => v.toFixed(1))} s`,
      `content ${fmt(p.loss_content, (v) => v.toExponential(3))}`, `style ${fmt(p.loss_style, (v) => v.toExponential(3))}`,
    ].concat(qualityWords(p), p.error ? [p.error] : []).join(" · ");
    $("detail").showModal();
    // A finished pair's curves come drawn by the server, as `nst report` draws them.
    $("pair-losses").hidden = !p.trace.length;
    if (p.trace.length) $("pair-losses").src = `${jobBase(job, id)}/losses.png`;
  } catch (error) { showError(error); }
}

for (const id of ["job", "artist", "status"]) $(id).addEventListener("change", () => { page = 1; loadPairs().catch(showError); });
$("prev").addEventListener("click", () => { if (page > 1) { page--; loadPairs().catch(showError); } });
$("next").addEventListener("click", () => { page++; loadPairs().catch(showError); });

$("strength").addEventListener("input", () => { $("strength-value").textContent = $("strength").value; });

// -- start ---------------------------------------------------------------------------------------

async function init() {
  config = await api("/api/config");
  for (const p of config.presets) $("preset").add(new Option(p, p, p === config.preset, p === config.preset));
  for (const c of config.colors) $("color").add(new Option(c, c));
  $("size").max = config.max_size;
  $("size").value = Math.min(256, config.max_size);
  $("strength").value = $("strength-value").textContent = config.strength;
  $("catalog").hidden = !config.catalog;
  $("catalog-off").hidden = config.catalog;
  for (const node of document.querySelectorAll(".if-catalog")) node.hidden = !config.catalog;
  $("jobs-off").hidden = config.jobs;
  $("jobs-on").hidden = !config.jobs;
  renderStyles();
  resetResult();
  if (config.catalog) await loadArtists();
}
const ready = init(); // a tab chosen before the config arrived waits for it
ready.catch(showError);
