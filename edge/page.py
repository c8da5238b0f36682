"""The live view's page: one HTML string with its CSS and JavaScript inline, no external resources (it works on a
LAN with no internet), served at / by edge.serve.

It shows /video.mjpg in <img id="video">, and from the /events stream the label (#label, with data-frame set to
the record's frame number), the score (#score), the FPS (#fps) and the top-k as bars (#topk); an outage record
shows a banner (#banner) until frames come back. In collect mode (/config.json says so) it adds a button per label
(button.collect[data-label], or keys 1-9) that POSTs /collect/LABEL, and the counts per label (#counts). A ?token=
in the page's address is carried into every request it makes.

PAGE_CSP allows exactly the inline script and style below (by their sha256) and requests to this server only.
"""

from __future__ import annotations

import base64
import hashlib
import re

_STYLE = """
:root { --bg:#0f1419; --card:#1a2129; --line:#2a3440; --text:#e6edf3; --dim:#8b98a5; --accent:#3fb950;
        --warn:#d29922; --bad:#f85149; --bar:#2f81f7; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--text); font:15px/1.4 system-ui,-apple-system,"Segoe UI",
       Roboto,"DejaVu Sans",sans-serif; }
header { display:flex; align-items:baseline; gap:1rem; flex-wrap:wrap; padding:.8rem 1.2rem;
         border-bottom:1px solid var(--line); }
header h1 { font-size:1.1rem; margin:0; font-weight:600; }
#about { color:var(--dim); font-size:.85rem; overflow-wrap:anywhere; }
#status { margin-left:auto; font-size:.8rem; padding:.15rem .6rem; border-radius:1rem; background:var(--line); }
#status.ok { background:#1f3b2a; color:var(--accent); } #status.bad { background:#3d1f22; color:var(--bad); }
#banner { margin:.8rem 1.2rem 0; padding:.6rem .9rem; border-radius:.5rem; background:#3d2e10; color:#f2cc60;
          border:1px solid var(--warn); }
main { display:grid; grid-template-columns:minmax(0,3fr) minmax(16rem,1fr); gap:1.2rem; padding:1.2rem; }
@media (max-width:800px) { main { grid-template-columns:1fr; padding:.8rem; } }
.card { background:var(--card); border:1px solid var(--line); border-radius:.6rem; padding:1rem; }
#stage { padding:0; overflow:hidden; display:flex; align-items:center; justify-content:center; min-height:12rem;
         background:#000; }
#video { display:block; width:100%; height:auto; }
#label { font-size:2.2rem; font-weight:700; margin:0; overflow-wrap:anywhere; }
#label.unknown { color:var(--dim); }
.stats { display:flex; flex-wrap:wrap; gap:.4rem 1.6rem; margin:.4rem 0 1rem; font-variant-numeric:tabular-nums; }
.stats div { display:flex; flex-direction:column; } .stats div > span { color:var(--dim); font-size:.8rem; }
.stats b { font-size:1.15rem; font-weight:600; white-space:nowrap; }
h2 { font-size:.8rem; text-transform:uppercase; letter-spacing:.06em; color:var(--dim); margin:1rem 0 .5rem; }
.row { display:grid; grid-template-columns:minmax(3rem,35%) 1fr 3.6rem; align-items:center; gap:.5rem;
       margin:.35rem 0; font-variant-numeric:tabular-nums; }
.row span:first-child { overflow:hidden; text-overflow:ellipsis; white-space:nowrap; }
.row span:last-child { text-align:right; color:var(--dim); }
.track { height:.7rem; background:var(--line); border-radius:.35rem; overflow:hidden; }
.fill { height:100%; background:var(--bar); border-radius:.35rem; transition:width .15s; }
.row:first-child .fill { background:var(--accent); }
#buttons { display:flex; flex-wrap:wrap; gap:.5rem; }
button.collect { font:inherit; color:var(--text); background:#21303f; border:1px solid var(--bar);
                 border-radius:.4rem; padding:.5rem .9rem; cursor:pointer; }
button.collect:hover { background:#2a3f55; } button.collect:active { transform:translateY(1px); }
#counts { list-style:none; padding:0; margin:.6rem 0 0; color:var(--dim); }
#counts b { color:var(--text); } #saved { color:var(--dim); font-size:.85rem; min-height:1.2em; }
"""

_SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const url = (p) => token ? p + (p.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : p;
const video = $("video");
let loads = 0;
function noteFrame() { video.dataset.width = video.naturalWidth; }
video.addEventListener("load", () => { loads += 1; video.dataset.frames = loads; noteFrame(); });
video.addEventListener("error", () => setTimeout(() => { video.src = url("/video.mjpg?t=" + Date.now()); }, 2000));
setInterval(noteFrame, 500);  /* browsers fire "load" once for a whole MJPEG stream */
video.src = url("/video.mjpg");

function status(text, kind) { const s = $("status"); s.textContent = text; s.className = kind; }
function fixed(v, digits) { return typeof v === "number" ? v.toFixed(digits) : "–"; }
function clock(iso) { const d = new Date(iso); return isNaN(d) ? iso : d.toLocaleTimeString(); }

function bars(list) {
  const box = $("topk");
  box.replaceChildren(...list.map((c) => {
    const row = document.createElement("div"), name = document.createElement("span");
    const track = document.createElement("div"), fill = document.createElement("div");
    const value = document.createElement("span");
    row.className = "row"; track.className = "track"; fill.className = "fill";
    name.textContent = c.label; name.title = c.label;
    fill.style.width = Math.max(0, Math.min(100, c.score * 100)).toFixed(1) + "%";
    value.textContent = (c.score * 100).toFixed(1) + "%";
    track.append(fill); row.append(name, track, value);
    return row;
  }));
}

function show(r) {
  if (r.event === "outage") {
    $("banner").textContent = "No frames since " + clock(r.since) + " (" + r.reason + "): reconnecting to " +
      r.source + "…";
    $("banner").hidden = false; status("no frames", "bad"); return;
  }
  $("banner").hidden = true; status("live", "ok");
  if (r.event) return;
  const label = $("label");
  label.textContent = r.label == null ? "unknown" : r.label;
  label.className = r.label == null ? "unknown" : "";
  label.dataset.frame = r.frame;
  $("score").textContent = typeof r.score === "number" ? fixed(r.score * 100, 1) + "%" : "–";
  $("fps").textContent = fixed(r.fps, 1);
  $("ms").textContent = fixed(r.inference_ms, 1);
  bars(r.top_k || []);
}

const events = new EventSource(url("/events"));
/* A fast loop sends hundreds of records a second: the page shows the newest one 20 times a second at most,
   and an outage or recovery at once (after the frame before it, so the banner is not hidden again). */
let pending = null, timer = null;
function flush() { clearTimeout(timer); timer = null; if (pending) show(pending); pending = null; }
events.onmessage = (e) => {
  const r = JSON.parse(e.data);
  if (r.event) { flush(); show(r); return; }
  pending = r;
  if (!timer) timer = setTimeout(flush, 50);
};
events.onopen = () => status("live", "ok");
events.onerror = () => status("reconnecting…", "bad");

function counts(c) {
  $("counts").replaceChildren(...Object.entries(c || {}).map(([k, n]) => {
    const li = document.createElement("li"), b = document.createElement("b");
    b.textContent = n; li.append(k + ": ", b); return li;
  }));
}

async function collect(label) {
  try {
    const r = await fetch(url("/collect/" + encodeURIComponent(label)), { method: "POST" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    counts(body.counts); $("saved").textContent = "saved " + body.saved;
  } catch (e) { $("saved").textContent = "not saved: " + e.message; }
}

fetch(url("/config.json")).then((r) => r.json()).then((c) => {
  $("about").textContent = [c.model, c.source].filter(Boolean).join(" · ");
  if (c.title) { document.title = c.title; $("title").textContent = c.title; }
  $("classify").hidden = c.mode === "collect";
  if (c.mode !== "collect") return;
  $("collect").hidden = false;
  $("buttons").replaceChildren(...c.labels.map((label, i) => {
    const b = document.createElement("button");
    b.className = "collect"; b.dataset.label = label;
    b.textContent = (i < 9 ? (i + 1) + "  " : "") + label;
    b.addEventListener("click", () => collect(label));
    return b;
  }));
  counts(c.counts);
  document.addEventListener("keydown", (e) => {
    const i = Number(e.key) - 1;
    if (i >= 0 && i < Math.min(9, c.labels.length) && !e.repeat) collect(c.labels[i]);
  });
});
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge live view</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body>
<header><h1 id="title">edge live view</h1><span id="about"></span><span id="status">connecting…</span></header>
<div id="banner" role="alert" hidden></div>
<main>
  <div class="card" id="stage"><img id="video" alt="the camera, annotated"></div>
  <aside class="card">
    <div id="classify">
      <p id="label" class="unknown">…</p>
      <div class="stats">
        <div><span>score</span><b id="score">–</b></div>
        <div><span>FPS</span><b id="fps">–</b></div>
        <div><span>inference</span><b><span id="ms">–</span> ms</b></div>
      </div>
      <h2>top categories</h2>
      <div id="topk"></div>
    </div>
    <section id="collect" hidden>
      <h2>save a photo as</h2>
      <div id="buttons"></div>
      <ul id="counts"></ul>
      <p id="saved"></p>
    </section>
  </aside>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _inline(tag: str) -> str:
    return re.search(rf"<{tag}>(.*?)</{tag}>", PAGE, re.S)[1]


# Only this page's own script and style run; it may load images and open connections to this server alone.
PAGE_CSP = (
    f"default-src 'none'; script-src {_hash(_inline('script'))}; style-src {_hash(_inline('style'))}; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
