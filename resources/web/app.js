// Lumen's web page: plain JS over the /api/v1 endpoints. Images are fetched with the bearer
// token (when the server has one) and shown as blob URLs, so the token never goes in a URL.
"use strict";
const API = "/api/v1";
const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("lumen-token") || "";
let urls = [];            // blob URLs of the current grid, revoked on the next search
let current = null;       // the photo open in the viewer
let writable = false;

// A token in the address (#token=...) is stored, then removed from the address bar and history.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  token = fromHash;
  localStorage.setItem("lumen-token", token);
  history.replaceState(null, "", location.pathname + location.search);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const url = path.startsWith(API + "/") ? path : API + path;  // results carry full API paths
  const res = await fetch(url, Object.assign({}, options, { headers }));
  if (res.status === 401) { askToken(); throw new Error("this server needs its access token"); }
  if (!res.ok) {
    let detail = res.statusText;
    try { const body = await res.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
    const error = new Error(detail);
    error.status = res.status;
    throw error;
  }
  return res;
}

function askToken() {
  if (!$("token-dialog").open) $("token-dialog").showModal();
}
$("token-form").addEventListener("submit", () => {
  token = $("token").value.trim();
  localStorage.setItem("lumen-token", token);
  refreshStatus();
});

async function blobUrl(path) {
  const res = await api(path);
  const url = URL.createObjectURL(await res.blob());
  urls.push(url);
  return url;
}

function say(text) { $("message").textContent = text; }

function showResults(data, label) {
  urls.forEach(URL.revokeObjectURL);
  urls = [];
  const grid = $("grid");
  grid.replaceChildren();
  say(data.count ? `${data.count} photos ${label}` : `nothing found ${label}`);
  const queue = [];
  for (const hit of data.results) {
    const cell = document.createElement("button");
    cell.className = "cell";
    cell.type = "button";
    cell.dataset.id = hit.id;
    const img = document.createElement("img");
    img.alt = hit.path.split("/").pop();
    const name = document.createElement("span");
    name.textContent = hit.path.split("/").pop();
    cell.append(img, name);
    cell.addEventListener("click", () => openPhoto(hit.id));
    grid.append(cell);
    queue.push([img, hit.thumbnail]);
  }
  // Six thumbnails at a time: the grid fills from the top without flooding the server.
  const worker = async () => {
    while (queue.length) {
      const [img, path] = queue.shift();
      try { img.src = await blobUrl(path + "?size=256"); } catch (e) { img.alt = "(unavailable)"; }
    }
  };
  for (let i = 0; i < 6; i++) worker();
}

async function run(label, request) {
  say("searching…");
  // 503/504: the model is still loading (the first search after the server starts, or after
  // it was idle for a while); the server keeps loading it, so ask again.
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await request();
      showResults(await res.json(), label);
      return;
    } catch (e) {
      if ((e.status === 503 || e.status === 504) && attempt < 5) {
        say("loading the model, one moment…");
        await new Promise((done) => setTimeout(done, 3000));
        continue;
      }
      say(e.message);
      return;
    }
  }
}

$("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("q").value.trim();
  if (!q) return;
  run(`for “${q}”`, () => api("/search?" + new URLSearchParams({ q, k: 60 })));
});

function searchFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name || "photo.jpg");
  form.append("k", "60");
  run(`like ${file.name || "your photo"}`, () => api("/search/image", { method: "POST", body: form }));
}
$("pick").addEventListener("change", (ev) => searchFile(ev.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("dragging"); });
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("dragging");
  searchFile(ev.dataTransfer.files[0]);
});

async function openPhoto(id) {
  try {
    const p = await (await api(`/photos/${id}`)).json();
    current = p;
    $("view-img").removeAttribute("src");
    $("view-img").alt = p.photo.path;
    $("view-caption").textContent = p.text.caption || "(no caption yet)";
    const tags = $("view-tags");
    tags.replaceChildren(...p.text.tags.map((t) => { const s = document.createElement("span"); s.textContent = t; return s; }));
    const size = p.photo.width && p.photo.height ? `${p.photo.width}×${p.photo.height}` : "";
    $("view-meta").textContent = [p.photo.taken_at, p.photo.camera, size, ...p.paths].filter(Boolean).join(" · ");
    $("edit-caption").value = p.text.caption_edited ? p.text.caption || "" : "";
    $("edit-caption").placeholder = p.text.caption || "";
    $("edit-tags").value = p.text.tags.join(", ");
    $("view-edit").hidden = !writable;
    $("save-msg").textContent = "";
    if (!$("viewer").open) $("viewer").showModal();
    $("view-img").src = await blobUrl(p.thumbnails["512"]);
  } catch (e) {
    say(e.message);
  }
}

$("save").addEventListener("click", async () => {
  if (!current) return;
  const id = current.photo.id;
  const json = (body) => ({ method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  try {
    await api(`/photos/${id}/caption`, json({ text: $("edit-caption").value }));
    const tags = $("edit-tags").value.split(/[,;\n]/).map((t) => t.trim()).filter(Boolean);
    await api(`/photos/${id}/tags`, json({ tags }));
    $("save-msg").textContent = "saved";
    openPhoto(id);
  } catch (e) {
    $("save-msg").textContent = e.message;
  }
});

$("similar").addEventListener("click", () => {
  if (!current) return;
  const id = current.photo.id;
  $("viewer").close();
  run("that look like this one", () => api(`/photos/${id}/similar?k=60`));
});

$("original").addEventListener("click", async () => {
  if (!current) return;
  try { window.open(await blobUrl(current.file), "_blank"); } catch (e) { $("save-msg").textContent = e.message; }
});

async function refreshStatus() {
  try {
    const s = await (await api("/status")).json();
    writable = s.writable;
    const p = s.progress;
    const busy = p.state === "indexing" && p.total ? ` · indexing: ${p.stage} ${p.done}/${p.total}` : "";
    const waiting = s.to_encode ? ` · ${s.to_encode} waiting to be indexed` : "";
    $("status").textContent = `${p.photos} photos${busy}${waiting}${s.readonly ? " · read-only" : ""}`;
    return p.state === "indexing";
  } catch (e) {
    $("status").textContent = e.message;
    return false;
  }
}

// Poll (EventSource cannot send the token): every 3 s while indexing, else every 30 s.
async function poll() {
  const busy = await refreshStatus();
  setTimeout(poll, busy ? 3000 : 30000);
}
poll();
